"""Activation clustering (Chen et al. 2018, "Detecting backdoor attacks on deep neural networks by
activation clustering", AAAI SafeAI workshop): each class's activations, reduced to 10 dimensions
(principal components here; the paper uses ICA), are clustered with 2-means; the smaller cluster is removed
when the rest of its data does not recognise it as its class (the paper's exclusionary
reclassification; poison_detection.py). The silhouette of the clustering is kept as the class's separation."""
from __future__ import annotations

import numpy as np
import torch

from ..core.registry import register
from .poison_detection import RepresentationDefense, RepresentationFilter

SILHOUETTE_SAMPLE = 2000   # points per class the silhouette is estimated on


class ClusterFilter(RepresentationFilter):
    def split(self, reps):
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score
        centred = reps - reps.mean(0)
        k = min(10, centred.shape[1], len(centred) - 1)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        z = (centred @ vh[:k].T).numpy()
        labels = KMeans(2, n_init=3, random_state=self.seed).fit_predict(z)
        if labels.min() == labels.max():
            return torch.zeros(len(z), dtype=torch.bool), 0.0
        score = float(silhouette_score(z, labels, sample_size=min(SILHOUETTE_SAMPLE, len(z)),
                                       random_state=self.seed))
        small = int(np.bincount(labels).argmin())
        return torch.as_tensor(labels == small), score

    def __repr__(self) -> str:
        return f"ClusterFilter(recipe={self.recipe.name}, threshold={self.threshold:g})"


@register
class ActivationClustering(RepresentationDefense):
    """Activation clustering (Chen et al. 2018): remove the smaller of two well-separated activation
    clusters of a class, then retrain."""

    name = "activation-clustering"
    title = "Activation-clustering poison removal"
    Filter = ClusterFilter
