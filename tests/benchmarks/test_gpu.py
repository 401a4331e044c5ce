"""benchmarks/gpu.sh: what its dry run would run, its refusal without CUDA, its arguments."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_dry_run_lists_every_step_on_cuda(import_script) -> None:
    cost = import_script(ROOT / "benchmarks" / "feature_cost.py", "feature_cost_benchmark")
    demo_log = ROOT / "runs" / "demo-gpu.log"
    existed = demo_log.exists()
    result = _run("--dry-run")
    assert result.returncode == 0, result.stderr
    commands = [line[2:] for line in result.stderr.splitlines() if line.startswith("+ ")]
    lare = [c for c in commands if "benchmarks/lare_batched.py" in c]
    assert len(lare) == 1 and "--device cuda --min-speedup 5" in lare[0]
    timed = [c for c in commands if "feature_cost.py --device cuda" in c]
    assert timed and all("--sizes 256 512" in c for c in timed)
    # Every cost spec at the common sizes is benchmarked, once. The METHOD:FAMILY rows carry
    # their own sizes (512 / 1024 px, FLUX.1-dev's 12 B parameters) and are counted FLOPs only
    # (benchmarks/results/feature_cost-families-flops.json), outside the 8-minute check.
    methods = [m for c in timed for m in re.findall(r"--method (\S+)", c)]
    common = [name for name, spec in cost.COST_SPECS.items() if spec.sizes is None]
    assert sorted(methods) == sorted(common)
    assert len(common) < len(cost.COST_SPECS)  # the family rows exist, and are left out
    assert any("feature_cost.py --table" in c for c in commands)
    assert any("ldmdetect demo --device cuda --output runs/demo-gpu" in c for c in commands)
    outputs = [o for c in commands for o in re.findall(r"benchmarks/results/\S+\.json", c)]
    assert len(outputs) >= 5 and all("-cuda-" in o for o in outputs)
    assert demo_log.exists() == existed  # a dry run writes nothing


def test_steps_pick_what_runs_and_unknown_ones_are_refused() -> None:
    result = _run("--dry-run", "--steps", "demo")
    commands = [line for line in result.stderr.splitlines() if line.startswith("+ timeout")]
    assert result.returncode == 0 and len(commands) == 1 and "ldmdetect demo" in commands[0]
    result = _run("--steps", "lare,nope")
    assert result.returncode == 2 and "unknown step 'nope'" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="measures for real on a GPU")
@pytest.mark.skipif(shutil.which("ldmdetect") is None, reason="it would install the package")
def test_without_cuda_it_fails_and_says_why() -> None:
    result = _run("--steps", "lare", CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 1
    assert "no CUDA device" in result.stderr
