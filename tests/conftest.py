"""Shared fixtures and test-wide settings.

Tests never reach the network: the hub is forced offline before any HF library is imported,
so a hub id fails at once instead of retrying for ~20 s per file. Torch runs one thread: the
tiny test models gain nothing from more, and with the cores busy its thread pool made them
40x slower (a 64 px tiny VAE round trip took 1.5 s with 2 threads, 40 ms with 1).
"""

import importlib.util
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from ldmdetect.engine.reconstruct import ReconstructConfig, build_aligned_dataset
from ldmdetect.engine.train import TrainConfig, train_detector
from ldmdetect.io.images import load_image, save_png
from ldmdetect.io.samples import sample_photos
from ldmdetect.memory import keep_freed_memory

torch.set_num_threads(1)
keep_freed_memory()  # as the CLI does: the suite allocates and frees the same buffers all along


@pytest.fixture(scope="session")
def import_script():
    """Import a script kept beside the package (``benchmarks/``, ``recipes/``) as a module."""

    def load(path: Path, name: str) -> ModuleType:
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses look their module up while being created
            spec.loader.exec_module(module)
        return sys.modules[name]

    return load


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion pipeline directory (seed 0), written once per test session.

    Treat it as read-only: tests in every folder share it.
    """
    from ldmdetect.generative.tiny import write_tiny_pipeline

    return write_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"), seed=0)


@pytest.fixture(scope="session")
def tiny_family_dir(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline_dir: Path):
    """``tiny_family_dir(family)``: a tiny pipeline directory of ``family`` (sd, sdxl, sd3,
    flux), seed 0, written once per test session. Read-only, like ``tiny_pipeline_dir``."""
    from ldmdetect.generative.tiny import write_tiny_family_pipeline

    written: dict[str, Path] = {"sd": tiny_pipeline_dir}

    def get(family: str) -> Path:
        if family not in written:
            directory = tmp_path_factory.mktemp(f"tiny-{family}")
            written[family] = write_tiny_family_pipeline(directory, family, seed=0)
        return written[family]

    return get


@pytest.fixture(scope="session")
def family_components(tiny_family_dir):
    """``family_components(family)``: the tiny ``family`` pipeline's components, loaded once
    per test session through the project's loader. Read-only."""
    from ldmdetect.generative.components import load_sd_components

    loaded = {}

    def get(family: str):
        if family not in loaded:
            loaded[family] = load_sd_components(tiny_family_dir(family), device="cpu")
        return loaded[family]

    return get


TEST_BACKBONE = "mobilenetv3_small_050"  # small timm CNN: fast on 2 CPU cores
# For tests that assert a detector learned: on 64 px crops ResNet-10t separates the tiny VAE's
# reconstructions from held-out photos in 2-3 epochs at every seed tried, where
# mobilenetv3_small_050 (1x1-2x2 maps, batch-norm statistics over 8 crops) did by seed luck.
LEARNING_BACKBONE = "resnet10t"


@pytest.fixture(scope="session")
def tiny_backbone() -> str:
    """``TEST_BACKBONE`` for the test modules beside this file: collected after the
    subfolders, they would find a subfolder's conftest under the name ``conftest``."""
    return TEST_BACKBONE


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six real photos from the packages' sample data, downsized for speed."""
    return _photos(tmp_path_factory, "photos", sample_photos()[:6])


def _photos(tmp_path_factory: pytest.TempPathFactory, name: str, photos: list) -> Path:
    out = tmp_path_factory.mktemp(name)
    for stem, path in photos:
        image = load_image(path)
        image.thumbnail((160, 160))
        save_png(image, out / f"{stem}.png")
    return out


def _aligned(tmp_path_factory, name: str, pipeline: Path, photos: Path) -> Path:
    out = tmp_path_factory.mktemp(name)
    build_aligned_dataset(
        [photos],
        out,
        autoencoder=pipeline,
        config=ReconstructConfig(crop_size=64, crops_per_image=4, seed=0),
        device="cpu",
    )
    return out


@pytest.fixture(scope="session")
def aligned_dir(tmp_path_factory, tiny_pipeline_dir: Path, photo_dir: Path) -> Path:
    """real/ and reconstructed/ (the tiny pipeline's VAE): 24 crops each of ``photo_dir``."""
    return _aligned(tmp_path_factory, "aligned", tiny_pipeline_dir, photo_dir)


@pytest.fixture(scope="session")
def heldout_aligned_dir(tmp_path_factory, tiny_pipeline_dir: Path) -> Path:
    """Like ``aligned_dir``, from the six sample photos ``photo_dir`` leaves out (other
    subjects; the motorcycle stereo pair stays together): data a detector trained on
    ``aligned_dir`` has never seen, for end-to-end tests that assert it learned something.

    The tiny pipeline's VAE has random weights, so its reconstructions lose the photo's
    colours and textures: a detector that learns anything at all separates them.
    """
    photos = _photos(tmp_path_factory, "heldout-photos", sample_photos()[6:])
    return _aligned(tmp_path_factory, "heldout-aligned", tiny_pipeline_dir, photos)


@pytest.fixture(scope="session")
def calibration_dir(tmp_path_factory, photo_dir: Path) -> Path:
    """120 real 64 px crops, 20 from each of six photos in one subfolder per photo (six
    sources): enough reals to resolve a 1% and a 5% threshold, too few for 0.1% (999)."""
    from ldmdetect.io.crops import crop, crop_boxes

    out = tmp_path_factory.mktemp("calibration")
    for i, photo in enumerate(sorted(photo_dir.glob("*.png"))):
        image = load_image(photo)
        folder = out / photo.stem
        folder.mkdir()
        rng = np.random.default_rng(i)
        for j, box in enumerate(
            crop_boxes(image.width, image.height, 64, policy="random", n=20, rng=rng)
        ):
            save_png(crop(image, box), folder / f"{j:02d}.png")
    return out


@pytest.fixture(scope="session")
def detector_dir(tmp_path_factory, aligned_dir: Path, calibration_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("detector")
    train_detector(
        [aligned_dir],
        out,
        TrainConfig(
            backbone=TEST_BACKBONE,
            epochs=10,
            batch_size=4,
            lr=3e-4,
            val_fraction=0.34,
            device="cpu",
            seed=0,
            calibration_reals=(str(calibration_dir),),
        ),
    )
    return out


@pytest.fixture(scope="session")
def two_family_aligned_dir(tmp_path_factory, tiny_family_dir, photo_dir: Path) -> Path:
    """An aligned dataset of two families: 12 real 32 px crops of ``photo_dir``, each
    reconstructed through the tiny SD pipeline's autoencoder (tagged ``sd-4ch``) and the tiny
    FLUX pipeline's (``flux-16ch``)."""
    out = tmp_path_factory.mktemp("two-family-aligned")
    build_aligned_dataset(
        [photo_dir],
        out,
        autoencoder=[(None, tiny_family_dir("sd")), (None, tiny_family_dir("flux"))],
        config=ReconstructConfig(crop_size=32, crops_per_image=2, seed=0),
        device="cpu",
    )
    return out


def _family_head(out: Path, aligned: Path, seed: int) -> Path:
    train_detector(
        [aligned],
        out,
        TrainConfig(
            backbone=LEARNING_BACKBONE,
            epochs=3,
            batch_size=4,
            val_fraction=0.34,
            device="cpu",
            seed=seed,
        ),
    )
    return out


@pytest.fixture(scope="session")
def family_detector_dir(tmp_path_factory, two_family_aligned_dir: Path) -> Path:
    """``ae`` trained for seconds on ``two_family_aligned_dir``: a family head over ("real",
    "sd-4ch", "flux-16ch"), its open-set threshold calibrated on the held-out third."""
    return _family_head(tmp_path_factory.mktemp("family-detector"), two_family_aligned_dir, 0)


@pytest.fixture(scope="session")
def second_family_detector_dir(tmp_path_factory, two_family_aligned_dir: Path) -> Path:
    """The same family head trained with another seed (1): an ensemble's second member."""
    return _family_head(tmp_path_factory.mktemp("family-detector-1"), two_family_aligned_dir, 1)


@pytest.fixture
def source_error(monkeypatch):
    """The hub offline for this test (HF_HUB_OFFLINE=1), and a check of the one-line error
    every loader raises for a source it cannot load (``ldmdetect.io.hub.source_error``):
    ``source_error(exc_info, source, local=...)`` returns the message."""
    from ldmdetect.io.hub import SourceUnavailable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def check(info: pytest.ExceptionInfo, source: str | Path, *, local: bool) -> str:
        message = str(info.value)
        assert isinstance(info.value, SourceUnavailable), type(info.value)
        assert "\n" not in message
        assert message.startswith("cannot load ")
        where = "the local path" if local else "the hub id"
        assert f"{where} '{source}'" in message, message
        if not local:
            assert "no local path by that name" in message
        # then the reason, then what to do, as a sentence of its own
        assert message.endswith(".") and len(message.split(": ", 1)[1].split(". ")) >= 2
        return message

    return check


# SynRIS fakes' sources; the other bundled photos are distractors. The motorcycle stereo pair
# (two views of one scene) stays on the distractor side: as a source its twin would be a true
# near-duplicate, not a distractor.
SYNRIS_SOURCES = ("astronaut", "chelsea", "coffee", "flower", "retina", "rocket")


def _small_photo(path, size=128):
    image = load_image(path)
    image.thumbnail((size, size))
    return image


def _perturbed_copy(image: Image.Image) -> Image.Image:
    """A 95% crop, a little off-centre: what a re-upload of the picture looks like."""
    w, h = image.size
    cw, ch = round(0.95 * w), round(0.95 * h)
    return image.crop((w - cw - 1, 1, w - 1, ch + 1))


@pytest.fixture(scope="session")
def embedder():
    """The real pretrained offline embedder (ImageNet EfficientNet-Lite0)."""
    from ldmdetect.features.embeddings import OFFLINE_EMBEDDER, load_embedder

    return load_embedder(OFFLINE_EMBEDDER)


@pytest.fixture(scope="session")
def synris_sources() -> tuple[str, ...]:
    """The names of the photos that have a fake and a perturbed copy in ``synris_known``."""
    return SYNRIS_SOURCES


@pytest.fixture(scope="session")
def synris_known(tmp_path_factory):
    """SynRIS known answer: fake/<source>.png, pool/copy_<source>.jpg (JPEG 85 of a 95% crop)
    among distractor photos, so every fake has exactly one right match."""
    root = tmp_path_factory.mktemp("synris")
    photos = dict(sample_photos())
    assert set(SYNRIS_SOURCES) <= set(photos), "bundled photos missing"
    (root / "fake").mkdir()
    (root / "pool").mkdir()
    for name, path in photos.items():
        image = _small_photo(path)
        if name in SYNRIS_SOURCES:
            save_png(image, root / "fake" / f"{name}.png")
            _perturbed_copy(image).save(root / "pool" / f"copy_{name}.jpg", quality=85)
        else:
            image.save(root / "pool" / f"other_{name}.jpg", quality=85)
    (root / "pool" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (root / "fake" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "fake" / "notes.txt").write_text("not an image")
    return root


THROWAWAY_METHOD = '''"""A method from a package outside ldmdetect, found by its entry point."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ldmdetect.config import IMAGENET_MEAN, IMAGENET_STD
from ldmdetect.io.labeled import read_labeled
from ldmdetect.methods import Method, MethodDefaults, normalize, register_method
from ldmdetect.methods.ae import CropTransform
from ldmdetect.methods.demo_recipe import DemoRecipe, DemoTraining, real_vs_generated

CLASSES = {classes!r}


class TinyNet(nn.Module):
    """Crops (N, 3, S, S) -> one logit per crop (two classes) or one per class."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(4, 1 if classes == 2 else classes)

    def forward(self, x):
        return self.head(self.body(x))


@register_method
class Throwaway(Method):
    name = {name!r}
    summary = "a tiny CNN on crops, registered from outside the package"
    classes = CLASSES
    tiny_settings = {{"input_size": 32}}
    default_cfg = MethodDefaults(backbone="tiny-cnn", input_size=32)

    def normalization(self, backbone):
        return IMAGENET_MEAN, IMAGENET_STD

    def build_model(self, config, *, pretrained=False):
        return TinyNet(len(self.classes))

    def transform(self, config, *, tries=1, train=False, augment=None):
        return CropTransform(config.input_size, tries, config.try_seed, augment, train)

    def logits(self, model, batch, config):
        crops = batch["crops"]
        b, t = crops.shape[:2]
        dtype = next(model.parameters()).dtype
        # (B, T, 1) for one logit: the engine reads it as (B, T) (Method.class_logits)
        return model(normalize(crops.flatten(0, 1), config, dtype)).view(b, t, -1)

    def cost_specs(self):
        from ldmdetect.methods.cost import CostSpec, Model, Pipeline, Stage, call, images

        def pipeline(size):
            net = Model("throwaway_tiny_cnn", lambda: TinyNet(len(CLASSES)), generator=False)
            stage = Stage("classifier", net.name, images(size), call)
            return Pipeline((net,), (stage,), "the tiny CNN on one crop")

        return (CostSpec(self.name, self.name, "tiny CNN", "crop side", 32, pipeline),)

    def demo_recipe(self):
        return ThrowawayDemo()


@dataclass(frozen=True)
class ThrowawayDemo(DemoRecipe):
    """The demo trains the tiny CNN on real crops vs. the generator's images, one epoch, and
    calibrates it with two views per image."""

    calibration_tries: int = 2
    epochs: int = 1

    def label(self, name):
        return f"{{name}} ({{self.epochs}} epoch)"

    def train_fields(self, cfg):
        return {{"input_size": 32, "epochs": self.epochs}}

    def training(self, run):
        data = real_vs_generated(run)
        return DemoTraining(
            self.train_fields(run.cfg),
            examples=read_labeled([data / "real"], [data / "generated"]),
        )
'''


@pytest.fixture
def throwaway_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``throwaway_method(classes=("real", "generated"))``: the name of a method whose package
    lives outside ldmdetect (in ``tmp_path``, on ``sys.path``) and registers through an
    installed distribution's entry point, as a third-party package would. Forgotten after the
    test."""
    import importlib

    from ldmdetect.methods import ENTRY_POINT_GROUP, registry

    made: list[tuple[str, str]] = []

    def make(classes: tuple[str, ...] = ("real", "generated")) -> str:
        name = f"throwaway-{len(classes)}-classes"
        module = f"throwaway_method_{len(classes)}"
        site = tmp_path / "site"
        (site / module).mkdir(parents=True)
        (site / module / "__init__.py").write_text(
            THROWAWAY_METHOD.format(classes=tuple(classes), name=name)
        )
        info = site / f"{module}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {module}\n")
        monkeypatch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        made.append((name, module))
        return name

    yield make
    for name, module in made:
        registry.unregister_method(name)
        registry._LOADED_ENTRY_POINTS.discard((name, module))
        sys.modules.pop(module, None)


THREE_CLASSES = ("real", "fam_a", "fam_b")


@pytest.fixture
def three_class_detector_dir(throwaway_method, tmp_path: Path) -> Path:
    """A saved detector of a throwaway method with three classes (``THREE_CLASSES``: reals
    and two generator families), untrained: its random head gives every class some
    probability, which is all the per-class outputs need. Thresholds: the raw 0.5 rule."""
    from ldmdetect import methods
    from ldmdetect.detector import Detector

    method = methods.get(throwaway_method(THREE_CLASSES))
    config = methods.make_config(method)
    torch.manual_seed(0)
    detector = Detector(config, method.build_model(config), device="cpu")
    return detector.save_pretrained(tmp_path / "three-class-detector")
