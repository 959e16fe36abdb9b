"""Billfold's local Stripe stand-in: localstripe, launched in its own process, plus what
Billfold adds to it there so that every Stripe flow Billfold uses runs locally.

- `launcher` starts and stops the stand-in process (`LocalStripe`) and serves it;
- `fidelity` patches localstripe (inside the stand-in process only) where it differs
  from Stripe.

Billfold's own code never imports this package except to launch it (`billfold dev`, the
tests, the benchmarks); it talks to the stand-in through the stripe SDK like to Stripe.
"""

from billfold.standin.launcher import STANDIN_API_KEY, LocalStripe, free_port

__all__ = ["STANDIN_API_KEY", "LocalStripe", "free_port"]
