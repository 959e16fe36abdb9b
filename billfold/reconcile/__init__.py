"""Reconciliation: compare Billfold's records with Stripe's and repair the drift through the
same handlers Stripe's webhooks use (`billfold reconcile`)."""
