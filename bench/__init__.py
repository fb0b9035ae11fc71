"""Benchmarks and the soak test: `python -m bench`, `python -m bench.soak`, `python -m bench.profile`."""
