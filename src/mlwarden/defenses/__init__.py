"""Defences that `mlwarden harden` applies, one per file. Importing this package registers them."""
from . import (  # noqa: F401
    activation_clustering, adversarial_training, denoiser, dp_sgd, feature_squeezing, fine_pruning, jpeg,
    knn_sanitization, nc_unlearning, outlier_filter, randomized_smoothing, roni, spectral_signatures)

ORDER = ["dp-sgd", "adversarial-training", "randomized-smoothing", "feature-squeezing", "jpeg", "denoiser", "roni",
         "knn-label-sanitization", "outlier-filter", "spectral-signatures", "activation-clustering", "fine-pruning",
         "nc-unlearning"]
