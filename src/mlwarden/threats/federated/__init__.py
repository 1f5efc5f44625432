"""Malicious federated clients (family `federated`): they act on the update a client sends."""
