"""Extraction detection in the spirit of PRADA (Juuti et al. 2019, "PRADA: Protecting Against DNN Model
Stealing Attacks"). Per client: for each query, the minimum L2 distance to the client's earlier queries
that the model gave the same class (a growing set per class, which keeps only queries farther than the
class's running threshold); benign streams give distances that look normally distributed, synthetic
attack streams (Jacobian augmentation, perturbations of a seed set) do not. After `min_queries`
distances, a Shapiro-Wilk W below `delta` flags the client.

Exact repeats (distance 0) are skipped: a benign client re-sending an input would otherwise flood the
distances with zeros and raise false alarms. Streams that are themselves natural-looking, such as
uniform random inputs or natural out-of-distribution data, produce normal-looking distances too: this
detector does not see them (Knockoff-style attackers with natural data evade it, as Juuti et al. and
Orekondy et al. report)."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import shapiro

MAX_DISTANCES = 5000
TEST_EVERY = 10  # re-run the normality test after this many new distances (it costs O(n log n))


@dataclass
class _Client:
    growing: dict = field(default_factory=dict)     # class -> (k, d) array of kept queries
    kept_dist: dict = field(default_factory=dict)   # class -> distances of kept queries
    threshold: dict = field(default_factory=dict)   # class -> T_c
    distances: list = field(default_factory=list)   # every minimum distance (the tested sample)
    flagged: bool = False
    w: float | None = None
    repeats: int = 0
    tested_at: int = 0
    seen: set = field(default_factory=set)          # digests of every query, for exact repeats


class Prada:
    def __init__(self, delta: float = 0.9, min_queries: int = 100):
        self.delta, self.min_queries = delta, min_queries
        self.clients: dict[str, _Client] = {}
        self._lock = threading.Lock()

    def observe(self, key: str, x: np.ndarray, classes: np.ndarray) -> _Client:
        flat = x.reshape(len(x), -1).astype(np.float64)
        with self._lock:
            st = self.clients.setdefault(key, _Client())
            for row, c in zip(flat, classes.tolist()):
                digest = hash(row.tobytes())
                if digest in st.seen:
                    st.repeats += 1
                    continue
                st.seen.add(digest)
                g = st.growing.get(c)
                if g is None:
                    st.growing[c] = row[None]
                    st.kept_dist[c] = []
                    st.threshold[c] = 0.0
                    continue
                d = float(np.sqrt(((g - row) ** 2).sum(1)).min())
                st.distances.append(d)
                if d > st.threshold[c]:
                    st.growing[c] = np.vstack([g, row])
                    st.kept_dist[c].append(d)
                    kd = np.asarray(st.kept_dist[c])
                    st.threshold[c] = max(st.threshold[c], float(kd.mean() - kd.std()))
            n = len(st.distances)
            if n >= self.min_queries and n - st.tested_at >= TEST_EVERY:
                st.tested_at = n
                st.w = float(shapiro(np.asarray(st.distances[-MAX_DISTANCES:])).statistic)
                st.flagged = st.flagged or st.w < self.delta
            return st
