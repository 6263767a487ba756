"""Benchmarks of shoprec next to their floors (see benchmarks/README.md)."""
