"""What a customer may use now: plan flags and limits, and credits for metered features."""
