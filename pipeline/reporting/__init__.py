"""The report stage's figures and markdown (pipeline.report), kept apart from its scoring."""
