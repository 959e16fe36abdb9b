"""Outbound webhooks: events about our customers, signed (Standard Webhooks) and delivered to
the host application's endpoints by the job queue."""
