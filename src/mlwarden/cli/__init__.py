"""The command line: thin parsing and printing around the orchestration layer."""
