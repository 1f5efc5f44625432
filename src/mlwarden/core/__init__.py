"""Core contracts: targets, data, recipes, findings, statistics and the threat registry."""
