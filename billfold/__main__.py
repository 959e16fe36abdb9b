"""`python -m billfold` is the `billfold` command."""

from billfold.cli import app

app()
