"""Usage and cost reports, prices, budgets and /api/usage."""
