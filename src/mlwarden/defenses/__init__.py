"""Defences that `mlwarden harden` applies, one per file. Importing this package registers them."""
from . import adversarial_training, denoiser, dp_sgd, feature_squeezing, jpeg, randomized_smoothing, roni  # noqa: F401

ORDER = ["dp-sgd", "adversarial-training", "randomized-smoothing", "feature-squeezing", "jpeg", "denoiser", "roni"]
