"""Benchmarks (`make bench`): each writes flat JSON figures to bench/results/<name>.json."""
