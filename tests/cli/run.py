import os
import subprocess
import sys


def mlwarden(*args, cwd=None, timeout=600):
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mlwarden", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)
