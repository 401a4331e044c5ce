"""``accelerate launch -m ldmdetect train``: 2 CPU processes (gloo) train one model.

The launched script runs ``python -m ldmdetect`` itself (runpy), after wrapping two functions to
record, per rank, a digest of the final weights, the validation history and the thresholds, and
which ranks saved a detector directory.
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import TEST_BACKBONE
from ldmdetect.engine.reconstruct import read_aligned_dataset
from ldmdetect.engine.train import split_by_source

pytest.importorskip("accelerate")

WORKER = """
import hashlib, json, os, runpy, sys
from pathlib import Path

import torch

torch.set_num_threads(1)
import ldmdetect.engine.train as train
from ldmdetect.detector import Detector

out = Path(os.environ["LDMDETECT_TEST_OUT"])
rank = os.environ["RANK"]
fit, save = train.fit, Detector.save_pretrained


def digest(state):
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def spy_fit(*args, **kwargs):
    model, history, last_val = fit(*args, **kwargs)
    record = {"weights": digest(model.state_dict()), "history": history}
    record["val_scores"] = last_val[0].tolist()
    record["skipped"] = list(kwargs.get("skipped_files") or {})
    record["world_size"] = torch.distributed.get_world_size()  # raises unless distributed
    (out / f"rank-{rank}.json").write_text(json.dumps(record))
    return model, history, last_val


def spy_save(self, directory):
    (out / f"saved-by-rank-{rank}").touch()
    return save(self, directory)


train.fit, Detector.save_pretrained = spy_fit, spy_save
sys.argv = ["ldmdetect", *sys.argv[1:]]
runpy.run_module("ldmdetect", run_name="__main__", alter_sys=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def _launch(tmp_path: Path, data: Path, *train_args: str) -> tuple[Path, Path]:
    """Run ``ldmdetect train`` in 2 gloo processes through the spying worker; returns the
    folder of per-rank records and the detector directory."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out, detector = tmp_path / "out", tmp_path / "detector"
    out.mkdir()
    env = dict(os.environ, LDMDETECT_TEST_OUT=str(out), OMP_NUM_THREADS="1")
    src = Path(__file__).resolve().parents[2] / "src"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # several processes; on a machine without CUDA they use gloo
        "--num_processes=2",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        f"--main_process_port={_free_port()}",
        str(worker),
        "train",
        "--data",
        str(data),
        "--output",
        str(detector),
        "--backbone",
        TEST_BACKBONE,
        "--epochs=1",
        "--val-fraction=0.34",
        "--device=cpu",
        "--workers=0",
        *train_args,
    ]
    # A rank left waiting in a collective would hang until gloo's 30 min timeout.
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out, detector


def test_two_cpu_processes_train_one_model_and_rank_0_saves_it(aligned_dir, tmp_path):
    out, detector = _launch(tmp_path, aligned_dir, "--batch-size=4")
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["weights"] == ranks[1]["weights"]
    # Validation ran on all held-out data on each rank, with the same model: same scores.
    assert ranks[0]["history"] == ranks[1]["history"] and len(ranks[0]["val_scores"]) == 16
    assert ranks[0]["val_scores"] == ranks[1]["val_scores"]
    assert sorted(p.name for p in out.glob("saved-by-rank-*")) == ["saved-by-rank-0"]
    saved = json.loads((detector / "config.json").read_text())
    assert _digest(load_file(detector / "model.safetensors")) == ranks[0]["weights"]
    assert saved["training"]["history"] == ranks[0]["history"]


def test_a_rank_whose_whole_batch_fails_to_decode_keeps_step_with_the_others(aligned_dir, tmp_path):
    """One training pair's real crop is corrupt; with one pair per batch, the rank that draws
    it has nothing to train on at that step. Both ranks must still end with the same weights,
    and the saved detector must name the file whichever rank met it."""
    data = tmp_path / "data"
    shutil.copytree(aligned_dir, data)
    train_pairs, _ = split_by_source(read_aligned_dataset(data), 0.34, seed=0)
    broken = Path(train_pairs[0].real)
    broken.write_bytes(b"not a PNG")
    out, detector = _launch(tmp_path, data, "--batch-size=1")
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["history"] == ranks[1]["history"]
    # Only one rank met the file; after fit both know of it.
    assert ranks[0]["skipped"] == ranks[1]["skipped"] == [str(broken)]
    saved = json.loads((detector / "config.json").read_text())
    assert list(saved["training"]["skipped_files"]) == [str(broken)]
    assert _digest(load_file(detector / "model.safetensors")) == ranks[0]["weights"]
