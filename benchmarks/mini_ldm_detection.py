"""In-house benchmark: the main job's detection table as JSON.

Trains every registered method on real photos vs. their reconstructions through the shipped
mini LDM's autoencoder, then scores held-out reconstructions and images the mini LDM generated
from unseen prompts and seeds: AUC, AP, TPR at 1% FPR and seconds per image, for 1-try,
10-try, JPEG-75 and the format control (reals and fakes through the same JPEG quality).

    python benchmarks/mini_ldm_detection.py [--generator mini|tiny|PIPELINE] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict

import torch

from ldmdetect.engine.demo import DemoConfig, run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="mini")
    parser.add_argument("--output", default=None, help="keep the run here (default: temp)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = DemoConfig(generator=args.generator, seed=args.seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_demo(args.output or tmp, config, log=lambda _: None)
    print(
        json.dumps(
            {
                "benchmark": "mini_ldm_detection",
                "rows": result.table,
                "seconds_per_stage": result.seconds,
                "seconds_total": round(time.perf_counter() - start, 1),
                "config": asdict(config),
                "torch_threads": config.threads or torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
