"""Snapshots: immutable, versioned, memory-mapped LMDB data sets and the builders that make them."""
