"""Speed and memory benchmarks, runnable as ``python -m benchmarks.NAME``."""
