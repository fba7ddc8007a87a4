"""Stage entry points (`python -m pipeline.<stage>`), the stage graph and model families (`graph`),
and the layers under them: core, io, gnn, train, sample, tools (docs/ARCHITECTURE.md)."""
