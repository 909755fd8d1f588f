"""OpenFeature Remote Evaluation Protocol (OFREP): placements as flags (docs/ofrep.md)."""
