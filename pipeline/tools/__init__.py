"""Tools beside the stages: benchmarks (`bench`, `bench_gnn`, `bench_scatter`), the GPU check
(`gpu_check`) and the full-data rehearsal (`rehearsal`). Nothing in a stage imports them."""
