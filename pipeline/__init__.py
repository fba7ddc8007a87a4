"""Stage entry points (`python -m pipeline.<stage>`) and all file I/O of the pipeline."""
