"""The embedded sample's generator (`python -m pipeline.sample_data`): programs, config searches, the hidden cost model, files."""
