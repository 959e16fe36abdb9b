"""The mail outbox: e-mails queued in the caller's transaction, sent by SMTP or written as files."""
