"""How long the CLI takes to start, as a ratio to `python -c "import json"` on the same machine (issue 39).

Each command runs REPEATS times in a fresh interpreter; the table gives the median and the range, and each
median over the median of `python -c "import json"` measured in the same run. With a commit as argument
(`bench_startup.py 845358c`), that commit's CLI is timed beside the working tree's, from a git worktree of
it, with the same interpreter and packages (PYTHONPATH points at its src/)."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEATS = 7
ROOT = Path(__file__).resolve().parents[1]


def run_times(argv: list[str], env: dict, cwd: str) -> list[float]:
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(torch.nn.Linear(4, 2).state_dict(), Path(tmp) / "weights.pt")
        trees = {"working tree": ROOT / "src"}
        if len(sys.argv) > 1:
            wt = Path(tmp) / "old"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(wt), sys.argv[1]],
                           check=True)
            trees[f"commit {sys.argv[1]}"] = wt / "src"
        base = run_times([sys.executable, "-c", "import json"], dict(os.environ), tmp)
        ref = statistics.median(base)
        print(f"python -c 'import json': median {ref * 1000:.0f} ms ({min(base) * 1000:.0f}-{max(base) * 1000:.0f}), "
              f"{REPEATS} runs each; load average {os.getloadavg()[0]:.1f}")
        print("tree | command | median s | range s | x import json")
        try:
            for label, src in trees.items():
                env = dict(os.environ, PYTHONPATH=str(src), COLUMNS="200")
                for cmd in (["--help"], ["--version"], ["threats"], ["defenses"], ["scan", "weights.pt"]):
                    ts = run_times([sys.executable, "-m", "mlwarden", *cmd], env, tmp)
                    m = statistics.median(ts)
                    print(f"{label} | mlwarden {' '.join(cmd)} | {m:.2f} | {min(ts):.2f}-{max(ts):.2f} | {m / ref:.1f}x")
        finally:
            if len(trees) > 1:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(Path(tmp) / "old")],
                               check=False)


if __name__ == "__main__":
    main()
