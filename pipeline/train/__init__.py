"""What every trainer shares: the per-collection skeleton in either mode (`trainer`), the fold/seed
runs and their out-of-fold predictions (`folds`)."""
