"""Defences that `mlwarden harden` applies, one per file. Importing this package registers them."""
from . import (  # noqa: F401
    activation_clustering, adversarial_training, bulyan, denoiser, dp_fedavg, dp_sgd, feature_squeezing,
    fine_pruning, fltrust, gradient_pruning, jpeg, knn_sanitization, krum, median, nc_unlearning, norm_clipping, outlier_filter,
    randomized_smoothing, roni, secure_aggregation, spectral_signatures, trimmed_mean, update_noise)

ORDER = ["dp-sgd", "adversarial-training", "randomized-smoothing", "feature-squeezing", "jpeg", "denoiser", "roni",
         "knn-label-sanitization", "outlier-filter", "spectral-signatures", "activation-clustering", "fine-pruning",
         "nc-unlearning", "krum", "multi-krum", "median", "trimmed-mean", "bulyan", "fltrust", "norm-clipping", "dp-fedavg", "secure-aggregation", "gradient-pruning",
         "update-noise"]
