"""Benchmarks: sources of forget/retain data and their evaluations."""
