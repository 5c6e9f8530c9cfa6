"""Benchmarks run by hand (``python -m vilt_lab.bench <name>``); the test suite runs each at a tiny size."""
