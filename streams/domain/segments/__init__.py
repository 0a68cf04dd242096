"""Segments: the definition language, per-person profiles and the incremental evaluator (pure)."""
