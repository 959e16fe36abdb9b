"""Rate limits shared by every server process: counters in the database."""
