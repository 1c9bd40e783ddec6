"""The lab: application code (experiments, models, benchmarks) built on the library's public API."""

__all__ = []
