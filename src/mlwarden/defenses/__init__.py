"""Defences that `mlwarden harden` applies, one per file. Importing this package registers them."""
from . import (  # noqa: F401
    adversarial_training, denoiser, dp_sgd, feature_squeezing, jpeg, knn_sanitization, outlier_filter,
    randomized_smoothing, roni)

ORDER = ["dp-sgd", "adversarial-training", "randomized-smoothing", "feature-squeezing", "jpeg", "denoiser", "roni", "knn-label-sanitization",
         "outlier-filter"]
