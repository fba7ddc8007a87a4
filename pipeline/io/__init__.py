"""File formats only: the raw npz files, collections and paths, predictions, the submission CSV,
runtimes and scoring, GBDT table paths, the audit JSON, HLO text."""
