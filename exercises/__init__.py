"""Exercises: loading benchmark data, extracting code from answers."""
