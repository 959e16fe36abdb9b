"""What an operator watches and does: dashboard figures, the audit log, jobs, /metrics."""
