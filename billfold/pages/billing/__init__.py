"""The customers' billing pages: overview, plan, cards, credits, orders, authenticate."""
