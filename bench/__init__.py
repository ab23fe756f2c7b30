"""The benchmark: `make bench` (see bench/bench.py)."""
