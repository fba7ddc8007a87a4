"""Pure model code: rankers, losses, metrics and ensemble math."""
