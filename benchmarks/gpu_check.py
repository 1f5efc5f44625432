"""On a machine with a GPU: the demo audit and one harden on the CPU and on CUDA, timed, with their
headline numbers side by side, then the cost-growth table on both. Run by benchmarks/gpu_check.sh."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(os.environ.get("OUT") or "/tmp/gpu-check")   # logs only
RUNS = Path("/tmp/gpu-check-runs")
PY = sys.executable
HARDEN = ["harden", "--defense", "adversarial-training", "--param", "epochs=5", "--threats", "fgsm"]


def mlwarden(*args, label):
    t = time.perf_counter()
    r = subprocess.run([PY, "-m", "mlwarden", *args], capture_output=True, text=True)
    dt = time.perf_counter() - t
    (OUT / f"{label}.log").write_text(r.stdout + r.stderr)
    if r.returncode not in (0, 1):
        print(f"{label}: exit {r.returncode}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
    return dt, r.returncode


def headlines(run: Path) -> dict:
    rep = run / "report.json"
    if not rep.exists():
        return {}
    return {f["threat"]: f["headline"][:70] for f in json.loads(rep.read_text())["findings"]}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(f"torch {torch.__version__}, GPU: {gpu}, {os.cpu_count()} CPU cores")
    mlwarden("audit", "--threats", "fgsm", "--device", "cpu", "--out", RUNS / "warm", label="warm")  # the demo model
    rows = []
    for what, args in (("demo audit", ["audit"]), ("harden (adversarial training, 5 epochs)", HARDEN)):
        times = {}
        for dev in ("cpu", "cuda"):
            times[dev] = mlwarden(*args, "--device", dev, "--out", RUNS / f"{args[0]}-{dev}", label=f"{args[0]}-{dev}")
        rows.append((what, times))
    print(f"{'run':<42} | {'cpu s':>7} | {'cuda s':>7} | speed-up | exit codes")
    for what, t in rows:
        ok = t["cpu"][1] in (0, 1) and t["cuda"][1] in (0, 1)
        ratio = f"{t['cpu'][0] / t['cuda'][0]:7.2f}x" if ok else "  failed"
        print(f"{what:<42} | {t['cpu'][0]:7.1f} | {t['cuda'][0]:7.1f} | {ratio} | {t['cpu'][1]}, {t['cuda'][1]}")
    a, b = headlines(RUNS / "audit-cpu"), headlines(RUNS / "audit-cuda")
    print("\ndemo audit headlines, cpu | cuda:")
    for k in a:
        print(f"  {k}: {a[k]} | {b.get(k)}")
    here = Path(__file__).parent
    for dev, threads in (("cuda", "1"), ("cpu", str(os.cpu_count()))):
        subprocess.run([PY, str(here / "bench_cost_growth.py"), dev, threads])


if __name__ == "__main__":
    main()
