"""Chip export formats (see :mod:`..export` for the orchestration)."""
