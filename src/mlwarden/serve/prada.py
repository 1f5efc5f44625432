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
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import shapiro

# Bounds on what the detector keeps, so that its memory is bounded per process whatever clients send: at most
# MAX_CLIENTS keys (the least recently seen unflagged key is forgotten first), and per key the last
# MAX_DISTANCES distances (the tested sample), MAX_KEPT kept queries (the oldest of a class leave first) and
# the digests of the last MAX_SEEN distinct queries (older exact repeats still give distance 0 while kept,
# and are skipped as repeats too). For 64 features a key costs at most about 2 MB.
MAX_CLIENTS = 1024
MAX_DISTANCES = 5000
MAX_KEPT = 1000
MAX_SEEN = 10_000
TEST_EVERY = 10  # re-run the normality test after this many new distances (it costs O(n log n))


@dataclass
class _Client:
    growing: dict = field(default_factory=dict)     # class -> (k, d) array of kept queries
    kept_dist: dict = field(default_factory=dict)   # class -> distances of kept queries (the last MAX_KEPT)
    threshold: dict = field(default_factory=dict)   # class -> T_c
    distances: deque = field(default_factory=lambda: deque(maxlen=MAX_DISTANCES))   # the tested sample
    flagged: bool = False
    w: float | None = None
    repeats: int = 0
    observed: int = 0                               # distances ever measured
    tested_at: int = 0
    seen: dict = field(default_factory=dict)        # digests of the last MAX_SEEN distinct queries (in order)

    @property
    def kept(self) -> int:
        return sum(len(g) for g in self.growing.values())


class Prada:
    def __init__(self, delta: float = 0.9, min_queries: int = 100):
        self.delta, self.min_queries = delta, min_queries
        self.clients: OrderedDict[str, _Client] = OrderedDict()   # least recently seen first
        self._lock = threading.Lock()

    def flagged(self, key: str) -> bool:
        st = self.clients.get(key)
        return st is not None and st.flagged

    def _client(self, key: str) -> _Client:
        st = self.clients.get(key)
        if st is not None:
            self.clients.move_to_end(key)
            return st
        if len(self.clients) >= MAX_CLIENTS:
            old = next((k for k, c in self.clients.items() if not c.flagged), next(iter(self.clients)))
            del self.clients[old]
        st = self.clients[key] = _Client()
        return st

    @staticmethod
    def _make_room(st: _Client, c) -> bool:
        """Room for one more kept query of class c: past MAX_KEPT the oldest of c leaves (of the largest class
        when c holds one); False when every class holds one."""
        if st.kept < MAX_KEPT:
            return True
        big = c if len(st.growing[c]) > 1 else max(st.growing, key=lambda k: len(st.growing[k]))
        if len(st.growing[big]) < 2:
            return False
        st.growing[big] = st.growing[big][1:]
        return True

    def observe(self, key: str, x: np.ndarray, classes: np.ndarray) -> _Client:
        flat = x.reshape(len(x), -1).astype(np.float64)
        with self._lock:
            st = self._client(key)
            for row, c in zip(flat, classes.tolist()):
                digest = hash(row.tobytes())
                if digest in st.seen:
                    st.repeats += 1
                    continue
                st.seen[digest] = None
                if len(st.seen) > MAX_SEEN:
                    del st.seen[next(iter(st.seen))]
                g = st.growing.get(c)
                if g is None:
                    st.growing[c] = row[None]
                    st.kept_dist[c] = deque(maxlen=MAX_KEPT)
                    st.threshold[c] = 0.0
                    continue
                d = float(np.sqrt(((g - row) ** 2).sum(1)).min())
                if d == 0.0:          # a repeat older than the digests kept
                    st.repeats += 1
                    continue
                st.distances.append(d)
                st.observed += 1
                if d > st.threshold[c] and self._make_room(st, c):
                    st.growing[c] = np.vstack([st.growing[c], row])
                    st.kept_dist[c].append(d)
                    kd = np.asarray(st.kept_dist[c])
                    st.threshold[c] = max(st.threshold[c], float(kd.mean() - kd.std()))
            n = st.observed
            if n >= self.min_queries and n - st.tested_at >= TEST_EVERY:
                st.tested_at = n
                st.w = float(shapiro(np.asarray(st.distances)).statistic)
                st.flagged = st.flagged or st.w < self.delta
            return st
