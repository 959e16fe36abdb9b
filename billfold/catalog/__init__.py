"""Catalog as code: plans, credit packages and products declared in a TOML file, applied to
the database and to Stripe (`billfold catalog apply`), and written back out (`export`)."""
