"""Backends on the same work: membership inference's reference models on digits, trained in this
process, by a pool of 2 processes and by a local Ray with 2 CPUs; each from an empty cache, one torch
thread per worker. Two workloads: 16 MLPs (the mlp recipe, 40 epochs; the issue's measure) and 8 CNNs
(the demo audit's quick profile, the cnn recipe). The models must be identical; the ratio is the
speed-up. The first call on a backend pays for starting its workers (and Ray); the second does not.

Then a harden sweep through the CLI (adversarial training of the digits MLP at two eps, re-audited with
FGSM, PGD and Square), as it is and with `--workers 2`: both points train side by side, then both audits
run side by side. Wall time of the whole command; the after-audits must be the same.

Usage: bench_backends.py [harden] (harden: the sweep only)"""
from __future__ import annotations

import tempfile
import time

import torch

from common import setup  # noqa: F401  (one torch thread)
from mlwarden.core.backend import LocalBackend, ProcessBackend, RayBackend
from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.io.datasets import load_builtin
from mlwarden.privacy.reference_models import train_reference_models

WORKLOADS = (("mlp", 16), ("cnn", 8))


def run(backend, recipe="mlp", n_ref=16):
    import os
    os.environ["MLWARDEN_CACHE"] = tempfile.mkdtemp()
    data = load_builtin("digits", seed=0)
    x = torch.cat([data.x_train, data.x_test])
    y = torch.cat([data.y_train, data.y_test])
    t0 = time.perf_counter()
    refs = train_reference_models(BUILTIN_RECIPES[recipe], x, y, 10, n_ref, 0, backend)
    return refs, time.perf_counter() - t0


def compare(recipe, n_ref):
    base, t_local = run(LocalBackend(), recipe, n_ref)
    rows = [("local (this process)", t_local, True)]
    for name, make in (("process, 2 workers", lambda: ProcessBackend(2)), ("ray (local), 2 CPUs",
                                                                            lambda: RayBackend(None, workers=2))):
        t0 = time.perf_counter()
        backend = make()
        t_start = time.perf_counter() - t0
        for when in ("first call", "second call"):   # the first pays for starting the workers
            refs, t = run(backend, recipe, n_ref)
            same = all(torch.equal(a, b) for ma, mb in zip(base.models, refs.models)
                       for a, b in zip(ma.state_dict().values(), mb.state_dict().values()))
            rows.append((f"{name}, {when}", t + (t_start if when == "first call" else 0.0), same))
        backend.close()
    print(f"\n{n_ref} reference models by the {recipe} recipe on digits (1,797 images), each run from an empty cache")
    print(f"{'backend':<40} | {'time':>7} | {'speed-up':>8} | identical models")
    for name, t, same in rows:
        print(f"{name:<40} | {t:6.1f}s | {t_local / t:7.2f}x | {same}")



def harden_sweep():
    import json
    import subprocess
    import sys
    from pathlib import Path
    folder = Path(tempfile.mkdtemp())
    state = folder / "mlp.pt"
    data = load_builtin("digits", seed=0)
    torch.save(BUILTIN_RECIPES["mlp"].fit(data.x_train, data.y_train, 10, seed=0).state_dict(), state)
    args = [sys.executable, "-m", "mlwarden", "harden", "--model", str(state), "--factory", "mlwarden.core.zoo:mlp",
            "--data", "digits", "--recipe", "mlp", "--defense", "adversarial-training", "--param", "eps=0.05,0.1",
            "--threats", "fgsm,pgd-linf,square", "--profile", "quick"]
    out = {}
    for name, extra in (("as it is", []), ("--workers 2", ["--workers", "2"])):
        t0 = time.perf_counter()
        r = subprocess.run([*args, *extra, "--out", str(folder / name.replace(" ", ""))], capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if r.returncode not in (0, 1):
            raise SystemExit(f"{name}: exit {r.returncode}: {r.stderr[-400:]}")
        summary = json.loads((folder / name.replace(" ", "") / "harden.json").read_text())
        out[name] = (seconds, [[c["after"] for c in p["comparison"]] for p in summary["points"]])
    (t_seq, after_seq), (t_par, after_par) = out.values()
    print("\nharden sweep: adversarial training of the digits MLP at eps 0.05 and 0.1, re-audited with FGSM, PGD, "
          "Square (quick profile), the whole command")
    print(f"{'run':<14} | {'time':>7} | {'speed-up':>8} | same after-audits")
    print(f"{'as it is':<14} | {t_seq:6.1f}s | {1.0:7.2f}x |")
    print(f"{'--workers 2':<14} | {t_par:6.1f}s | {t_seq / t_par:7.2f}x | {after_seq == after_par}")


def main():
    import sys
    if sys.argv[1:] != ["harden"]:
        for recipe, n_ref in WORKLOADS:
            compare(recipe, n_ref)
    harden_sweep()


if __name__ == "__main__":
    main()
