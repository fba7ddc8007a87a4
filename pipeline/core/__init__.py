"""Run machinery that knows no file format: hydra entry points and one-line errors, atomic writes,
the per-graph runner and stage stamps, progress, loggers, prefetch."""
