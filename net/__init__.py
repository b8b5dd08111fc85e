"""Network helpers that are not actors: per-destination reply budgets."""
