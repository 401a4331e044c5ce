#!/usr/bin/env bash
# The GPU check, on one CUDA device, in under 8 minutes: writes benchmarks/results/*-cuda-*.json.
#
#   benchmarks/gpu.sh             # run it (from a source checkout; installs the package if needed)
#   benchmarks/gpu.sh --dry-run   # print the commands, run nothing
#   benchmarks/gpu.sh --steps demo  # only these steps (comma-separated: lare, cost, demo)
#
# 1. benchmarks/lare_batched.py: batched LaRE against the per-image loop, SD v1.5 shapes with
#    random weights; fails below 5x.
# 2. benchmarks/feature_cost.py on CUDA: every method at 256 and 512 px, FLOPs, images/s, peak
#    memory and each stage's MFU (dense bf16 peak from the GPU's name for H100/H200/A100, else
#    from $LDMDETECT_PEAK_BF16_FLOPS). Three runs (the cheap methods, dire, fakeinversion), so
#    one that runs out of time costs only its own figures; then the merged table. The
#    METHOD:FAMILY specs (SDXL, SD3.5-medium, FLUX.1-dev at 512 and 1024 px) are not timed
#    here: their FLOPs are in feature_cost-families-flops.json (--flops-only).
# 3. ldmdetect demo --device cuda --output runs/demo-gpu: the main job on the GPU; its metrics
#    and seconds per stage go to demo-cuda-<gpu>.json.
#
# Every step runs even when one before it failed; the exit status is 1 when any failed (or
# no CUDA device is there), 0 otherwise. Steps share one time budget ($GPU_CHECK_BUDGET_S,
# default 460 s): each step's timeout is cut to what is left, and a step with under 20 s left
# is skipped and counted as failed.
set -uo pipefail

cd "$(dirname "$0")/.."
DRY_RUN=0
STEPS=lare,cost,demo
while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --steps) STEPS=${2:-}; shift ;;
    -h | --help) sed -n '2,/^set /p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (expected --dry-run, --steps)" >&2; exit 2 ;;
  esac
  shift
done
for step in ${STEPS//,/ }; do
  case "$step" in
    lare | cost | demo) ;;
    *) echo "gpu.sh: unknown step '$step' in --steps (expected lare, cost, demo)" >&2; exit 2 ;;
  esac
done
wanted() { [[ ",$STEPS," == *",$1,"* ]]; }

PYTHON=${PYTHON:-python}
RESULTS=benchmarks/results
BUDGET=${GPU_CHECK_BUDGET_S:-460}
START=$SECONDS
FAILED=()

say() { echo "[gpu.sh $((SECONDS - START))s] $*" >&2; }
show() { echo "+ $*" >&2; } # each command, as --dry-run lists them

# run NAME LIMIT_S COMMAND...: COMMAND under a timeout, cut to the budget left.
run() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  ((limit > left)) && limit=$left
  show timeout "$limit" "$@"
  ((DRY_RUN)) && return 0
  if ((limit < 20)); then
    say "skipped $name: the time budget is spent"
    FAILED+=("$name (no time left)")
    return 1
  fi
  timeout --kill-after=15 "$limit" "$@"
  local status=$?
  if ((status == 124 || status == 137)); then
    say "$name ran out of time ($limit s)"
    FAILED+=("$name (timed out after $limit s)")
  elif ((status != 0)); then
    say "$name failed (exit status $status)"
    FAILED+=("$name (exit status $status)")
  fi
  return $status
}

if ! command -v ldmdetect > /dev/null || ! "$PYTHON" -c "import ldmdetect" 2> /dev/null; then
  show "$PYTHON" -m pip install -e .
  if ((!DRY_RUN)); then
    # Offline machines have the dependencies but not the package: install it alone then.
    "$PYTHON" -m pip install -q -e . || "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . || {
      say "cannot install the package (pip install -e . failed)"
      exit 1
    }
  fi
fi

if ((DRY_RUN)); then
  GPU="<gpu>"
else
  # A file-name tag for the GPU: "NVIDIA H100 80GB HBM3" -> h100-80gb-hbm3.
  if ! GPU=$("$PYTHON" -c "
import re, torch
assert torch.cuda.is_available()
name = torch.cuda.get_device_name(0).lower().removeprefix('nvidia').strip()
print(re.sub(r'[^a-z0-9]+', '-', name).strip('-'))
" 2> /dev/null); then
    say "no CUDA device: nothing measured"
    exit 1
  fi
  say "GPU: $GPU; time budget $BUDGET s"
  mkdir -p "$RESULTS"
fi

# 1. Batched LaRE vs. the per-image loop.
wanted lare && run lare_batched 90 "$PYTHON" benchmarks/lare_batched.py --device cuda --min-speedup 5 \
  --output "$RESULTS/lare_batched-cuda-$GPU.json"

# 2. Every method's cost at 256 and 512 px, with MFU per stage.
COST_FILES=() COST_GROUPS=()
# The costly specs (DDIM inversions: many UNet passes per image) get a run and a time limit of
# their own; every other spec the registry's method packages declare shares one run.
COSTLY=(dire fakeinversion)
if wanted cost; then
  if specs=$("$PYTHON" benchmarks/feature_cost.py --list); then
    cheap=$(grep -vxF -f <(printf '%s\n' "${COSTLY[@]}") <<< "$specs")
    COST_GROUPS=("$(echo $cheap)" "${COSTLY[@]}")
  else
    say "feature_cost.py --list failed: the cost step cannot say what to measure"
    FAILED+=("feature_cost (listing the cost specs)")
  fi
fi
for group in "${COST_GROUPS[@]}"; do
  [[ -n $group ]] || continue # no cheap spec listed: nothing to run, not "every spec"
  args=() tag=${group%% *}
  for method in $group; do args+=(--method "$method"); done
  [[ $group == *" "* ]] && tag=cheap
  file="$RESULTS/feature_cost-cuda-$GPU-$tag.json"
  limit=150
  [[ $tag == dire ]] && limit=90
  if run "feature_cost $tag" "$limit" "$PYTHON" benchmarks/feature_cost.py --device cuda \
    --sizes 256 512 "${args[@]}" --output "$file" > /dev/null; then
    COST_FILES+=("$file")
  fi
done
if ((${#COST_FILES[@]})); then
  show "$PYTHON" benchmarks/feature_cost.py --table "${COST_FILES[@]}"
  ((DRY_RUN)) || "$PYTHON" benchmarks/feature_cost.py --table "${COST_FILES[@]}"
fi

# 3. The demo on the GPU.
# Its progress goes to stderr as it runs; its table (stdout) to a log, printed after.
DEMO_LOG=runs/demo-gpu.log
if ((DRY_RUN)); then DEMO_OUT=/dev/null; else mkdir -p runs && DEMO_OUT=$DEMO_LOG; fi
wanted demo && run "ldmdetect demo" 240 ldmdetect demo --device cuda --output runs/demo-gpu \
  > "$DEMO_OUT"
demo_status=$?
((DRY_RUN)) || ! wanted demo || cat "$DEMO_LOG"
if wanted demo && ((demo_status == 0)); then
  show "$PYTHON" - "$DEMO_LOG" runs/demo-gpu "$RESULTS/demo-cuda-$GPU.json" "(the demo's figures)"
  ((DRY_RUN)) || "$PYTHON" - "$DEMO_LOG" runs/demo-gpu "$RESULTS/demo-cuda-$GPU.json" << 'EOF' ||
"""The demo's figures as one JSON: each method's metrics, the seconds per stage, the device."""
import json
import sys
from pathlib import Path

import torch

log, run, output = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
lines = log.read_text().splitlines()
seconds = next(
    (json.loads(line.split(":", 1)[1]) for line in lines if line.startswith("seconds per stage:")),
    None,
)
metrics = {}
for path in sorted(run.glob("reports/*/metrics.json")):
    result = json.loads(path.read_text())
    metrics[path.parent.name] = {key: result.get(key) for key in ("generators", "mean", "synris")}
report = {
    "benchmark": "demo",
    "command": "ldmdetect demo --device cuda --output runs/demo-gpu",
    "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    "torch": torch.__version__,
    "seconds_per_stage": seconds,
    "metrics": metrics,
    "table": [line for line in lines if line.startswith("|")],
}
output.write_text(json.dumps(report, indent=1) + "\n")
print(f"wrote {output}")
EOF
    FAILED+=("demo summary")
fi

if ((DRY_RUN)); then
  exit 0
fi
say "done in $((SECONDS - START)) s; results in $RESULTS/*-cuda-$GPU*.json"
if ((${#FAILED[@]})); then
  say "failed: ${FAILED[*]}"
  exit 1
fi
