"""Orchestration: configuration, the demo subject, the runner and severity gating."""
