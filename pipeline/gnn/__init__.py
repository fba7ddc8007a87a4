"""The GNN's dataset (batches of configs, sampling, per-batch terms: `dataset`) and training engine
(steps and scoring: `steps`; processes, RNG, precision, optimizer, schedule, weight averaging,
checkpoints: `training`; the memory plan: `memory`; the C allocator setting: `allocator`)."""
