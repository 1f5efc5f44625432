"""Ownership watermark in the spirit of DAWN (Szyller et al. 2021, "DAWN: Dynamic Adversarial
Watermarking of Neural Networks"): a keyed hash (HMAC-SHA256) of each query selects about `rate` of
them, and for those the answer's top class is swapped with a wrong class the hash also picks. The
selected queries and the labels given are recorded. A model trained on this server's answers learns
those wrong labels; an independent model does not. `verify_copy` turns that into a p-value."""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binom

from ..core.stats import clopper_pearson


class Watermark:
    def __init__(self, key: str, rate: float, registry: str | None):
        from .guards import Journal
        self.key, self.rate = key.encode(), rate
        # opened at start: a failure per query would reveal the marked inputs; a disk that fails later keeps
        # the records in memory and makes every model request a 503, marked or not (guards.Journal, app.py)
        self.registry = Journal(registry, "--watermark-registry") if registry else None

    def _hash(self, row: np.ndarray) -> int:
        return int.from_bytes(hmac.new(self.key, row.astype(np.float32).tobytes(), hashlib.sha256).digest()[:8], "big")

    def apply(self, x: np.ndarray, probs: np.ndarray, client: str) -> np.ndarray:
        probs = probs.copy()
        c = probs.shape[1]
        for i, row in enumerate(x):
            h = self._hash(row)
            if (h % 1_000_000) / 1_000_000 >= self.rate:
                continue
            top = int(probs[i].argmax())
            wrong = (top + 1 + (h // 1_000_000) % (c - 1)) % c
            probs[i, [top, wrong]] = probs[i, [wrong, top]]
            if self.registry is not None:
                self.registry.append({"client": client, "label": wrong, "true": top,
                                      "input": row.reshape(-1).tolist()})
        return probs


@dataclass
class Verdict:
    matches: int
    watermarks: int
    null_rate: float    # upper 95% bound on how often the suspect disagrees with the victim on fresh inputs
    p_value: float
    copied: bool


def load_registry(path: str | Path) -> list[dict]:
    """The records of a --watermark-registry file (JSONL, one {"input": [numbers], "label": class id, ...} a
    line), each checked: a line that is not such a record is a Malformed error (a ValueError) naming it."""
    from ..core.errors import Malformed
    from ..core.files import MAX_NESTING, nesting, read_text
    records: list[dict] = []
    for ln, line in enumerate(read_text(path, "--registry").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise Malformed(f"line {ln} is not JSON ({type(e).__name__})") from None
        if not isinstance(r, dict) or nesting(r) > MAX_NESTING:
            raise Malformed(f"line {ln} is not a JSON object")
        x, label = r.get("input"), r.get("label")
        if not isinstance(x, list) or not x or not all(_finite(v) for v in x):
            raise Malformed(f"line {ln}: 'input' must be a non-empty list of finite numbers")
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < 2**31:
            raise Malformed(f"line {ln}: 'label' must be a class id (an integer from 0)")
        if records and len(x) != len(records[0]["input"]):
            raise Malformed(f"line {ln}: 'input' holds {len(x)} values, the first record's "
                            f"{len(records[0]['input'])}")
        records.append(r)
    return records


def _finite(v) -> bool:
    try:
        return not isinstance(v, bool) and isinstance(v, (int, float)) and np.isfinite(float(v))
    except OverflowError:   # an integer beyond any float
        return False


@torch.no_grad()
def verify_copy(suspect, victim, records: list[dict], fresh: torch.Tensor, input_shape,
                alpha: float = 1e-6) -> Verdict:
    """Does `suspect` answer the watermarked queries with the watermark labels more often than chance?

    Null hypothesis: the suspect did not learn from the watermarked answers, so it gives a watermark's
    wrong label at most as often as it disagrees with the victim at all; that rate is measured on
    `fresh` inputs (upper 95% bound) and the p-value is the binomial tail of the matches."""
    uniq = {tuple(r["input"]): r["label"] for r in records}
    x = torch.tensor(list(uniq.keys()), dtype=torch.float32).reshape(-1, *input_shape)
    labels = torch.tensor(list(uniq.values()))
    matches = int((suspect(x).argmax(1) == labels).sum())
    disagree = int((suspect(fresh).argmax(1) != victim(fresh).argmax(1)).sum())
    null = clopper_pearson(disagree, len(fresh))[1]
    p = float(binom.sf(matches - 1, len(labels), null))
    return Verdict(matches, len(labels), null, p, p < alpha)
