"""extract -> train -> scan -> evaluate for every generator-backed method on every modern family.

lare2, fakeinversion and dire on tiny SDXL, SD3 and FLUX.1 pipelines, through the Python API:
the cached maps have the family's shape, a cache resumes (a rerun computes nothing, a partial
cache is completed without touching what it holds), LaRE's noise is seeded per image (an
image's map does not depend on its batch), a detector trains from the cache, scans a folder
with a broken file in it and is evaluated on both classes. Every combination runs; the one
setting refused by design (FLUX.1's inversion with classifier-free guidance) is refused in one
line before any work. Sizes are the smallest that run (64 px, 2 inversion steps, an ensemble
of 2) so the whole matrix stays cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TEST_BACKBONE
from ldmdetect.detector import Detector
from ldmdetect.engine.evaluate import evaluate
from ldmdetect.engine.extract import ExtractSummary, extract_features
from ldmdetect.engine.metrics import roc_auc
from ldmdetect.engine.scan import scan
from ldmdetect.engine.train import TrainConfig, train_detector
from ldmdetect.features.cache import FeatureCache
from ldmdetect.generative.families import UnsupportedFamily
from ldmdetect.io.labeled import read_labeled

METHODS = ("lare2", "fakeinversion", "dire")
FAMILIES = ("sdxl", "sd3", "flux")
CASES = [(m, f) for m in METHODS for f in FAMILIES]
IMAGE = 64  # every method's working square
FEATURE = {
    "lare2": {"lare": {"image_size": IMAGE, "ensemble": 2}},
    "fakeinversion": {
        "inversion": {"image_size": IMAGE, "steps": 2},
        "map_size": 32,
        "captioner": "fixed:a photo",
    },
    "dire": {"dire": {"image_size": IMAGE, "steps": 2}},
}
INPUT_SIZE = {"lare2": 48, "fakeinversion": 32, "dire": 32}
# lare2 names its image tower by library; the others take a timm name.
BACKBONE = {"lare2": f"timm:{TEST_BACKBONE}", "fakeinversion": TEST_BACKBONE, "dire": TEST_BACKBONE}
LATENT_CHANNELS = {"sdxl": 4, "sd3": 16, "flux": 16}
PER_CLASS = 6


def expected_shapes(method: str, family: str) -> dict[str, tuple[int, ...]]:
    """What each cached entry holds, from the method's definition: LaRE's map on the latent
    grid with the family's latent channels; FakeInversion's decoded D(z_T) and D(z_0') at
    ``map_size``; DIRE's |x - x'| at the reconstructed square's size."""
    if method == "lare2":
        return {"lare": (LATENT_CHANNELS[family], IMAGE // 8, IMAGE // 8)}
    if method == "fakeinversion":
        side = FEATURE[method]["map_size"]
        return {"noise": (3, side, side), "reconstruction": (3, side, side)}
    return {"dire": (3, IMAGE, IMAGE)}


@pytest.fixture(scope="module")
def data(aligned_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``real/`` and ``fake/`` (reconstructed) folders of a few 64 px crops, and ``broken/``
    with one file that does not decode."""
    root = tmp_path_factory.mktemp("family-data")
    for kind, source in (("real", "real"), ("fake", "reconstructed")):
        (root / kind).mkdir()
        for f in sorted((aligned_dir / source).glob("*.png"))[:PER_CLASS]:
            (root / kind / f.name).write_bytes(f.read_bytes())
    (root / "broken").mkdir()
    (root / "broken" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def _extract(method: str, sources: list[Path], cache: Path, pipeline: Path, **kw) -> ExtractSummary:
    return extract_features(
        method, sources, cache, pipeline=pipeline, feature=FEATURE[method], device="cpu", **kw
    )


def _maps(cache: Path) -> dict[str, dict[str, torch.Tensor]]:
    stored = FeatureCache(cache)
    return {key: stored[key] for key in stored.keys()}  # noqa: SIM118 (no __iter__)


class Run:
    """One (method, family) case's extraction, shared by the tests of that case."""

    def __init__(self, method: str, data: Path, pipeline: Path, root: Path) -> None:
        self.pipeline = pipeline
        self.cache, self.batched = root / "cache", root / "batched"
        sources = [data / "real", data / "fake"]
        # Half the data first, one image per batch, as a run interrupted after the reals.
        self.partial = _extract(method, [data / "real"], self.cache, pipeline, batch_size=1)
        self.partial_maps = _maps(self.cache)
        # The whole data in one batch, into a cache of its own.
        self.whole = _extract(method, sources, self.batched, pipeline, batch_size=12)
        # The partial cache completed, then a rerun over it.
        self.resumed = _extract(method, sources, self.cache, pipeline)
        self.rerun = _extract(method, sources, self.cache, pipeline)


@pytest.fixture(scope="module")
def runs(data, tiny_family_dir, tmp_path_factory):
    made: dict[tuple[str, str], Run] = {}

    def get(method: str, family: str) -> Run:
        if (method, family) not in made:
            root = tmp_path_factory.mktemp(f"{method}-{family}")
            made[method, family] = Run(method, data, tiny_family_dir(family), root)
        return made[method, family]

    return get


@pytest.mark.parametrize(("method", "family"), CASES)
def test_maps_have_the_familys_shape_and_the_cache_resumes(method, family, runs):
    run = runs(method, family)
    assert run.partial.computed == PER_CLASS and not run.partial.errors
    assert (run.resumed.already_cached, run.resumed.computed) == (PER_CLASS, PER_CLASS)
    assert (run.rerun.already_cached, run.rerun.computed) == (2 * PER_CLASS, 0)
    maps = _maps(run.cache)
    assert len(maps) == 2 * PER_CLASS
    shapes = expected_shapes(method, family)
    dtype = torch.float32 if method == "lare2" else torch.uint8
    for entry in maps.values():
        assert {k: tuple(v.shape) for k, v in entry.items()} == shapes
        assert all(v.dtype == dtype for v in entry.values())
    # Completing the cache left what it held untouched.
    for key, entry in run.partial_maps.items():
        assert all(maps[key][k].equal(v) for k, v in entry.items()), key
    # Real and reconstructed crops differ, so do their maps: the features are not constant.
    values = torch.stack([next(iter(e.values())).float() for e in maps.values()])
    assert values.std(dim=0).max() > 0


@pytest.mark.parametrize(("method", "family"), CASES)
def test_an_images_features_do_not_depend_on_its_batch(method, family, runs):
    run = runs(method, family)
    assert run.whole.computed == 2 * PER_CLASS
    batched = _maps(run.batched)
    # Every image of the partial run was computed alone (batch 1), the batched cache's in one
    # batch of 12. LaRE's noise comes from each image's own seed, so its maps agree to float
    # precision; the inversions draw nothing, and their uint8 maps agree to one rounding step.
    assert set(run.partial_maps) <= set(batched)
    for key, entry in run.partial_maps.items():
        for name, alone in entry.items():
            together = batched[key][name]
            if method == "lare2":
                torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
            else:
                assert (together.int() - alone.int()).abs().max() <= 1, (key, name)


@pytest.mark.parametrize(("method", "family"), CASES)
def test_trains_from_the_cache_scans_and_evaluates(
    method, family, runs, data, calibration_dir, tmp_path
):
    run = runs(method, family)
    examples = read_labeled([data / "real"], [data / "fake"])
    config = TrainConfig(
        method=method,
        backbone=BACKBONE[method],
        input_size=INPUT_SIZE[method],
        epochs=1,
        batch_size=8,
        val_fraction=0.34,
        device="cpu",
        feature=FEATURE[method],
        calibration_reals=(str(calibration_dir),),
    )
    train_detector(
        [],
        tmp_path / "det",
        config,
        examples=examples,
        pipeline=run.pipeline,
        feature_cache=run.cache,
    )
    assert len(FeatureCache(run.cache)) == 2 * PER_CLASS  # every image came from the cache
    detector = Detector.from_pretrained(tmp_path / "det", device="cpu")
    assert detector.features.components.family == family
    assert detector.config.training["skipped_files"] == {}
    assert detector.config.training["feature_cache"] == str(run.cache)

    reals = sorted((data / "real").glob("*.png"))
    broken = data / "broken" / "broken.jpg"
    rows = scan(detector, [*reals[:3], broken, *reals[3:]])
    assert [row.path for row in rows] == [str(p) for p in [*reals[:3], broken, *reals[3:]]]
    assert rows[3].score is None and rows[3].error and rows[3].label == ""
    for row in rows[:3] + rows[4:]:
        assert row.error == "" and 0.0 <= row.score <= 1.0
        # decided at the 1% FPR threshold, which the 120 calibration reals resolve
        assert row.label in ("real", "generated") and row.threshold == "fpr_0.01"

    evaluation = evaluate(detector, [data / "real"], [data / "fake"], n_boot=0)
    (condition,) = evaluation.conditions()
    # One epoch on six pairs through random tiny generators guarantees no separation; what it
    # guarantees is that the reported AUC is the one of the scores the evaluation made.
    real, fake = evaluation.scores["real"], evaluation.scores["generators"]["fake"]
    labels = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    assert condition.mean["auc"] == pytest.approx(roc_auc(labels, np.r_[real, fake]))
    assert evaluation.result["errors"] == {}
    counts = evaluation.result["generators"]["fake"]
    assert (counts["n_real"], counts["n_fake"]) == (PER_CLASS, PER_CLASS)
    # The reals' scores are the scan's: one detector, one score per image, however it is run.
    scanned = [row.score for row in rows[:3] + rows[4:]]
    np.testing.assert_allclose(evaluation.scores["real"], scanned, rtol=0, atol=1e-6)


def test_flux_inversion_with_guidance_is_refused_in_one_line(data, tiny_family_dir, tmp_path):
    feature = {**FEATURE["fakeinversion"], "inversion": {"image_size": IMAGE, "guidance": 2.0}}
    with pytest.raises(UnsupportedFamily) as info:
        extract_features(
            "fakeinversion",
            [data / "real"],
            tmp_path / "cache",
            pipeline=tiny_family_dir("flux"),
            feature=feature,
            device="cpu",
        )
    message = str(info.value)
    assert "\n" not in message and "'fakeinversion'" in message and "flux" in message
    assert "guidance" in message
    assert not (tmp_path / "cache").exists()  # refused before any work
