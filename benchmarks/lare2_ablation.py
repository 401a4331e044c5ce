"""How much of lare2's result comes from the LaRE map: EGRE with and without it (JSON out).

Trains lare2 on the demo's data (real crops of the training photos vs. the mini LDM's images
from training captions) with guidance "lare" and "none" (an all-zero map, the paper's
without-LaRE ablation), on an ImageNet-pretrained and a random EfficientNet-Lite0 tower, and
evaluates each on held-out photos vs. generations from unseen prompts and seeds.

    python benchmarks/lare2_ablation.py --demo-dir runs/demo   # reuses a demo run's data
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from ldmdetect.detector import Detector
from ldmdetect.engine.demo import DemoConfig, demo_train_config, run_demo
from ldmdetect.engine.evaluate import evaluate
from ldmdetect.engine.train import train_detector
from ldmdetect.features.cache import FeatureCache
from ldmdetect.generative.mini import mini_ldm_dir
from ldmdetect.io.labeled import read_labeled
from ldmdetect.methods.demo_recipe import real_vs_generated_dir

# The method ablated: EGRE's guidance by the LaRE map is its own setting.
METHOD = "lare2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    demo = args.demo_dir
    defaults = DemoConfig()
    if not (real_vs_generated_dir(demo) / "generated").is_dir():
        run_demo(
            demo,
            DemoConfig(methods=(METHOD,), seed=args.seed, other_generator=None),
            log=lambda _: None,
        )
    data = real_vs_generated_dir(demo)
    examples = read_labeled([data / "real"], [data / "generated"])
    recipe = replace(defaults.recipe(METHOD), epochs=args.epochs)
    cfg = replace(defaults, seed=args.seed, method_settings={METHOD: recipe})
    base = demo_train_config(cfg, METHOD)
    lare = base.feature["lare"]
    results = {}
    for pretrained in (True, False):
        for guidance in ("lare", "none"):
            name = f"lite0-{'pretrained' if pretrained else 'random'}-{guidance}"
            start = time.perf_counter()
            output = demo / "ablation" / name
            train_detector(
                [],
                output,
                replace(base, pretrained=pretrained, feature=base.feature | {"guidance": guidance}),
                examples=examples,
                pipeline=mini_ldm_dir(),
                feature_cache=demo / "features" / "lare2-train",
            )
            detector = Detector.from_pretrained(output, device="cpu")
            if detector.features is not None:
                detector.feature_cache = FeatureCache(
                    demo / "features" / "lare2-eval", settings=detector.features.settings()
                )
            heldout = demo / "data" / "heldout"
            evaluation = evaluate(
                detector,
                [heldout / "real"],
                {
                    "reconstructed (held-out)": [heldout / "reconstructed"],
                    "generated": [demo / "data" / "generated"],
                },
            )
            clean = evaluation.headline()
            intervals = clean.row_intervals() or {}
            results[name] = {
                test: {k: round(m[k], 4) for k in ("auc", "ap", "tpr@fpr=0.01")}
                | {"auc_95ci": intervals.get(test, {}).get("auc")}
                for test, m in clean.generators.items()
            }
            results[name]["seconds"] = round(time.perf_counter() - start, 1)
    print(
        json.dumps(
            {
                "benchmark": "lare2_ablation",
                "train": {
                    "real": sum(e.label == 0 for e in examples),
                    "fake": sum(e.label == 1 for e in examples),
                },
                "lare": lare,
                "epochs": args.epochs,
                "torch": torch.__version__,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
