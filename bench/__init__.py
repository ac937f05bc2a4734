"""Benchmarks (run each script with `uv run python bench/<script>.py`)."""
