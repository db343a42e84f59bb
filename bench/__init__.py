"""Benchmarks (not tests): each writes its numbers to ``bench/results/*.json``."""
