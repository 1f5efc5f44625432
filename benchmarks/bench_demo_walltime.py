"""Wall time of the default `mlwarden audit` (built-in demo) on this machine, with a cold and a warm
model cache. Goal (issue 2): at most 3 minutes."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

cache = tempfile.mkdtemp()
for label in ("cold cache (trains the CNN)", "warm cache"):
    out = tempfile.mkdtemp()
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mlwarden", "audit", "--out", out], capture_output=True, text=True,
                       env=dict(os.environ, MLWARDEN_CACHE=cache))
    print(f"mlwarden audit (demo, {label}): {time.perf_counter() - t:.1f}s, exit {r.returncode}", flush=True)
