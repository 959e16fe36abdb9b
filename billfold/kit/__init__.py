"""Shared infrastructure every domain uses: the database, errors and their HTTP answers,
the answer envelope, money, idempotency, audit, observability, paging, request limits."""
