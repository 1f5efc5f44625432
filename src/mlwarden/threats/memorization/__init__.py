"""Unintended memorization: canary exposure and secret extraction (Carlini et al. 2019)."""
