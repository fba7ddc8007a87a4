"""What every trainer shares: the fold/seed runs and their out-of-fold predictions (`folds`)."""
