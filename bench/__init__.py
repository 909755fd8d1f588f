"""Benchmarks. Each prints its figures with one JSON object on its last line (SPEC §9)."""
