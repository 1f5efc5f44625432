"""Defences that `mlwarden harden` applies, one per file. Importing this package registers them."""
from . import adversarial_training, dp_sgd  # noqa: F401

ORDER = ["dp-sgd", "adversarial-training"]
