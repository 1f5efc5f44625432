"""On a machine with a GPU: every code path that puts a network on the device, run with `--device cpu` and
`--device cuda` side by side (concurrently, one torch thread each), with their exit codes and headline
numbers, so a path that breaks or gives other numbers on a GPU shows. Run by `gpu_check.sh paths`.

The paths: the backdoor family (BadNets, transfer-learning backdoor, Neural Cleanse, feature collision), the
repair defences (fine-pruning, Neural Cleanse unlearning), label-only membership inference, the language-model
threats (LM membership, Secret Sharer), poisoning (label flipping, gradient matching, gradient poisoning),
adversarial training of a tabular MLP (breast cancer), DP-SGD, randomized smoothing, a federation with
leakage, a process pool (`--workers 3`) and `mlwarden serve`. Times are printed but are not a speed comparison: the runs share the machine.

Usage: gpu_paths.py [DEVICE] (default cuda; `cpu` checks the commands on a machine without a GPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

OUT = Path(os.environ.get("OUT") or "/tmp/gpu-check")   # logs only
RUNS = Path("/tmp/gpu-paths-runs")
PY = sys.executable
Q = ["--profile", "quick"]
TAB = ["--model", str(RUNS / "bc-mlp.pt"), "--factory", "mlwarden.core.zoo:tabular_mlp", "--data", "breast-cancer",
       "--recipe", "tabular-mlp"]
PATHS = {   # the longest first: they run side by side
    "smoothing": ["harden", "--defense", "randomized-smoothing", "--param", "epochs=5", "--threats", "fgsm", *Q],
    "poisoning": ["audit", "--threats", "label-flipping,gradient-matching,gradient-poisoning", *Q],
    "repair": ["harden", "--defense", "fine-pruning,nc-unlearning", "--threats", "backdoor,neural-cleanse", *Q],
    "label-only": ["audit", "--threats", "label-only-membership", *Q],
    "backdoor": ["audit", "--threats", "backdoor,backdoor-transfer,neural-cleanse,feature-collision", *Q],
    "dp-sgd": ["harden", "--defense", "dp-sgd", "--param", "epochs=5", "--threats", "membership-inference", *Q],
    "workers": ["audit", "--threats", "membership-inference,fgsm,square", "--workers", "3", *Q],
    "lm": ["audit", "--data", "stdlib-docstrings", *Q],
    "federated": ["audit", "--federated", "--threats", "sign-flipping,model-replacement,idlg,dlg", *Q],
    "tabular-at": ["harden", *TAB, "--defense", "adversarial-training", "--threats", "fgsm,pgd-linf", *Q],
}


def mlwarden(args, label, timeout=420):
    t = time.perf_counter()
    try:
        r = subprocess.run([PY, "-m", "mlwarden", *args], capture_output=True, text=True, timeout=timeout)
        code, text = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        code, text = "timeout", f"{e.stdout or ''}{e.stderr or ''}"
        text = text.decode() if isinstance(text, bytes) else text
    (OUT / f"{label}.log").write_text(text)
    last = text.strip().splitlines()[-1][:160] if text.strip() else ""
    return {"s": time.perf_counter() - t, "code": code, "last": last}


def headlines(run: Path) -> dict:
    """threat -> headline of every finding that ran (for a harden, before and after), and a harden's accuracy."""
    out = {}
    for name in ("report.json", "before/report.json", "after/report.json"):
        rep = run / name
        if rep.exists():
            for f in json.loads(rep.read_text())["findings"]:
                if f["status"] != "skipped":
                    out[name.replace("report.json", "").replace("/", " ") + f["threat"]] = f["headline"][:80]
    harden = run / "harden.json"
    if harden.exists():   # the hardened model's accuracy, and randomized smoothing's certified accuracy
        for p in json.loads(harden.read_text())["points"]:
            out["accuracy " + p["label"]] = f"{p['accuracy']['value']:.3f}"
            for row in (p.get("evaluation") or {}).get("randomized-smoothing", {}).get("certified", []):
                out[f"certified r={row['radius']}"] = f"{row['certified']:.3f}, empirical {row['empirical']:.3f}"
    return out


def tabular_model():
    """The breast-cancer MLP the tabular path hardens, trained once on the CPU and saved as a state_dict."""
    import torch

    from mlwarden.core.recipe import BUILTIN_RECIPES
    from mlwarden.io.datasets import load_builtin
    path = RUNS / "bc-mlp.pt"
    if not path.exists():
        d = load_builtin("breast-cancer", seed=0)
        torch.save(BUILTIN_RECIPES["tabular-mlp"].fit(d.x_train, d.y_train, d.n_classes, seed=0).state_dict(), path)


def serve_check(device: str, port: int) -> dict:
    """`mlwarden serve --device DEVICE` on the demo CNN: one OIP v2 inference of 8 rows."""
    t = time.perf_counter()
    log = open(OUT / f"serve-{device}.log", "w")
    p = subprocess.Popen([PY, "-m", "mlwarden", "serve", "--device", device, "--port", str(port)], stdout=log,
                         stderr=subprocess.STDOUT)
    body = json.dumps({"inputs": [{"name": "x", "shape": [8, 1, 8, 8], "datatype": "FP32",
                                   "data": [0.5] * 512}]}).encode()
    result = {"s": 0.0, "code": "no answer", "last": ""}
    try:
        for _ in range(240):
            time.sleep(0.5)
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/model/infer", data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as r:
                    out = json.loads(r.read())["outputs"][0]
                sums = [round(sum(out["data"][i * 10:(i + 1) * 10]), 4) for i in range(8)]
                result = {"s": time.perf_counter() - t, "code": 0, "last": f"200, shape {out['shape']}, row sums "
                                                                             f"{sorted(set(sums))}"}
                break
            except (ConnectionError, urllib.error.URLError, OSError):
                if p.poll() is not None:
                    result["code"] = f"exit {p.returncode}"
                    break
    finally:
        p.terminate()
        p.wait(10)
        log.close()
    return result


def main():
    device = sys.argv[1] if len(sys.argv) > 1 else "cuda"
    OUT.mkdir(parents=True, exist_ok=True)
    RUNS.mkdir(parents=True, exist_ok=True)
    import torch
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(0)})" if device.startswith("cuda") else "")
          + f", {os.cpu_count()} CPU cores", flush=True)
    tabular_model()
    # the demo CNN and the character LM are trained once (cached) before the runs that share them start
    mlwarden(["audit", "--threats", "fgsm", "--device", "cpu", "--out", str(RUNS / "warm")], "warm")
    mlwarden(["audit", "--data", "stdlib-docstrings", "--threats", "secret-sharer", "--profile", "quick",
              "--device", "cpu", "--out", str(RUNS / "warm-lm")], "warm-lm")
    devices = ["cpu", device] if device != "cpu" else ["cpu"]
    jobs = [(name, dev) for name in PATHS for dev in devices]
    workers = min(len(jobs) + 2, max((os.cpu_count() or 2) - 2, 1))
    with ThreadPoolExecutor(workers) as pool:
        futures = {(name, dev): pool.submit(mlwarden, [*args, "--device", dev, "--out", str(RUNS / f"{name}-{dev}")],
                                            f"{name}-{dev}")
                   for name, args in PATHS.items() for dev in devices}
        served = {dev: pool.submit(serve_check, dev, 8180 + i) for i, dev in enumerate(devices)}
        results = {k: f.result() for k, f in futures.items()}
        results.update({("serve", dev): f.result() for dev, f in served.items()})
    print(f"\n{'path':<11} | " + " | ".join(f"{d + ' exit, s':>14}" for d in devices) + " | last line on " + devices[-1])
    for name in [*PATHS, "serve"]:
        cells = " | ".join(f"{str(results[name, d]['code']):>6}, {results[name, d]['s']:5.0f}s" for d in devices)
        print(f"{name:<11} | {cells} | {results[name, devices[-1]]['last'][:90]}")
    print("\nheadlines, " + " | ".join(devices) + " (a '=' where they agree):")
    for name in PATHS:
        runs = [headlines(RUNS / f"{name}-{d}") for d in devices]
        for threat in runs[0]:
            other = runs[-1].get(threat)
            print(f"  {name}/{threat}: {runs[0][threat]}" + ("" if len(runs) == 1 else
                                                              " | =" if other == runs[0][threat] else f" | {other}"))
        for threat in runs[-1]:
            if threat not in runs[0]:
                print(f"  {name}/{threat}: (none) | {runs[-1][threat]}")


if __name__ == "__main__":
    main()
