"""Defences that `mlwarden harden` applies, one per file. Importing this package registers them."""
from . import dp_sgd  # noqa: F401

ORDER = ["dp-sgd"]
