"""Writes the saved-detector fixture: a tiny ``ae`` detector (1.5 M parameters), the
images it scores and the scores it gave when saved. (A ``lare2`` one would weigh 11 MB: EGRE's
refinement is 1024 wide whatever the tower.)

Run once, from the repository root, with the ldmdetect of commit fc6efce (before method
packages and typed settings):

    python tests/data/legacy_detectors/make_fixture.py

The detectors and ``scores.json`` are committed; ``tests/methods/test_saved_detectors.py``
loads them with today's code and expects the same scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from ldmdetect.detector import Detector
from ldmdetect.engine.train import TrainConfig, train_detector
from ldmdetect.io.labeled import read_labeled

HERE = Path(__file__).resolve().parent
SETTINGS = {
    "ae": {"backbone": "mobilenetv3_small_050", "input_size": 32},
}


def pictures(folder: Path, n: int, seed: int, blur: bool) -> None:
    """Smooth random pictures (48 px); the "generated" ones blurred."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.random((6, 6, 3)) * 255
        image = Image.fromarray(base.astype(np.uint8)).resize((48, 48), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 12, (48, 48, 3))
        image = Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))
        if blur:
            image = image.filter(ImageFilter.GaussianBlur(1.2))
        image.save(folder / f"{i:02d}.png")


def main() -> None:
    torch.manual_seed(0)
    data = HERE / "train"
    pictures(data / "real", 12, 0, blur=False)
    pictures(data / "fake", 12, 1, blur=True)
    pictures(HERE / "images", 3, 2, blur=False)
    pictures(HERE / "images" / "blurred", 3, 3, blur=True)
    examples = read_labeled([data / "real"], [data / "fake"])
    images = sorted(str(p.relative_to(HERE)) for p in (HERE / "images").rglob("*.png"))
    scores = {}
    for name, settings in SETTINGS.items():
        cfg = TrainConfig(
            method=name, epochs=3, batch_size=8, val_fraction=0.34, device="cpu", **settings
        )
        out = HERE / name
        train_detector([], out, cfg, examples=examples)
        detector = Detector.from_pretrained(out, device="cpu")
        values = detector.decision_function([HERE / p for p in images], tries=2)
        scores[name] = {p: float(s) for p, s in zip(images, values, strict=True)}
    for path in (data / "real").glob("*.png"):
        path.unlink()
    for path in (data / "fake").glob("*.png"):
        path.unlink()
    for folder in (data / "real", data / "fake", data):
        folder.rmdir()
    (HERE / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")


if __name__ == "__main__":
    main()
