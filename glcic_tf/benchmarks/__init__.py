"""Benchmarks: each module exposes `run(quick: bool = False) -> dict` and prints JSON."""
