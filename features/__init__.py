"""Pure functions on graphs and configs: pruning, padding, dedup and packing, tabular features."""
