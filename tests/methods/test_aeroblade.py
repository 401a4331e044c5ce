"""AEROBLADE on tiny autoencoders: min over autoencoders, attribution, maps, calibration."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ldmdetect.detector import Detector
from ldmdetect.engine.metrics import conformal_threshold
from ldmdetect.engine.train import TrainConfig, train_detector
from ldmdetect.generative.autoencoder import load_autoencoder
from ldmdetect.generative.mini import mini_ldm_dir
from ldmdetect.generative.tiny import write_tiny_pipeline
from ldmdetect.io.images import load_image, pil_to_uint8, save_png, tensor_to_pil
from ldmdetect.io.labeled import read_labeled
from ldmdetect.methods.aeroblade import AerobladeExplanation, AerobladeTransform, explain
from ldmdetect.methods.aeroblade.features import autoencoder_source, reconstruct_any

SIZE = 32


@pytest.fixture(scope="module")
def second_pipeline(tmp_path_factory) -> Path:
    return write_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd-seed1"), seed=1)


@pytest.fixture(scope="module")
def reals(aligned_dir: Path) -> list[Path]:
    return sorted((aligned_dir / "real").glob("*.png"))


def _detector(reals, autoencoders, out: Path, size: int = SIZE, **feature) -> Detector:
    cfg = TrainConfig(
        method="aeroblade",
        input_size=size,
        device="cpu",
        feature={"aeroblade": {"autoencoders": [str(a) for a in autoencoders], **feature}},
    )
    examples = read_labeled([reals[0].parent], [])
    return train_detector([], out, cfg, examples=examples)


@pytest.fixture(scope="module")
def both(reals, tiny_pipeline_dir, second_pipeline, tmp_path_factory) -> Detector:
    out = tmp_path_factory.mktemp("aeroblade-both")
    _detector(reals, [tiny_pipeline_dir, second_pipeline], out)
    return Detector.from_pretrained(out, device="cpu")


def test_score_is_the_minimum_over_autoencoders(
    both, reals, tiny_pipeline_dir, second_pipeline, tmp_path
):
    images = reals[:4]
    first = _detector(reals, [tiny_pipeline_dir], tmp_path / "a").decision_function(images)
    second = _detector(reals, [second_pipeline], tmp_path / "b").decision_function(images)
    together = both.decision_function(images)
    assert not np.allclose(first, second)  # the two autoencoders do differ
    np.testing.assert_allclose(together, np.maximum(first, second), rtol=1e-5)  # -min distance
    assert (together <= 0).all()


def test_attribution_names_the_closest_autoencoder(both, reals, tiny_pipeline_dir, second_pipeline):
    explained = both.explain([load_image(p) for p in reals[:4]])
    assert both.explains and all(isinstance(e, AerobladeExplanation) for e in explained)
    # named by folder and subfolder (the temporary folders' numbering depends on test order)
    names = {f"{tiny_pipeline_dir.name}/vae", f"{second_pipeline.name}/vae"}
    for e in explained:
        assert set(e.distances) == names
        closest = min(e.distances, key=e.distances.get)
        assert e.autoencoder == closest
        assert e.score == pytest.approx(-e.distances[closest])
    np.testing.assert_allclose(
        [e.score for e in explained], both.decision_function(reals[:4]), rtol=1e-5
    )


def test_distance_map_is_the_view_sized_map_of_the_closest_autoencoder(both, reals):
    (e,) = both.explain(reals[0])
    assert e.distance_map.shape == (SIZE, SIZE)
    assert (e.distance_map >= 0).all()
    assert float(e.distance_map.mean()) == pytest.approx(-e.score, rel=0.05)


def test_evidence_map_covers_the_image_where_the_view_lies(both, reals, detector_dir):
    image = load_image(reals[0]).resize((45, 40))
    evidence = both.evidence_map(image)
    assert evidence.shape == (40, 45)
    assert ((evidence >= 0) & (evidence <= 1)).all() and evidence.max() > 0
    (e,) = both.explain(image)
    assert e.evidence.shape == (SIZE, SIZE)
    left, top, right, bottom = e.box
    assert left % 8 == 0 and top % 8 == 0 and (right - left, bottom - top) == (SIZE, SIZE)
    outside = np.ones_like(evidence, dtype=bool)
    outside[top:bottom, left:right] = False
    assert (evidence[outside] == 0).all()
    # ae's map, unlike this view's, covers all of the image (tests/methods/test_ae.py)
    other = Detector.from_pretrained(detector_dir, device="cpu")
    assert other.explains and other.evidence_map(image).shape == (40, 45)


def test_the_old_module_level_explain_warns_and_gives_the_hooks_answer(both, reals):
    with pytest.warns(DeprecationWarning, match="detector.explain"):
        (old,) = explain(both, reals[0])
    (new,) = both.explain(reals[0])
    assert (old.score, old.distances, old.box) == (new.score, new.distances, new.box)
    np.testing.assert_array_equal(old.evidence, new.evidence)


def test_calibration_writes_thresholds_on_the_reals_and_no_half(both, reals):
    assert "0.5" not in both.config.thresholds
    scores = both.decision_function(reals)
    # 24 reals resolve 5% (19 needed) and not 1% (99): that one is recorded, not stored.
    assert both.config.thresholds["fpr_0.05"] == pytest.approx(
        conformal_threshold(scores, 0.05)[0], rel=1e-5
    )
    assert "fpr_0.01" not in both.config.thresholds
    assert both.config.calibration["thresholds"]["fpr_0.01"]["resolved"] is False
    assert both.config.training["examples"]["val"]["real"] == len(reals)


def test_config_records_exact_sources_and_the_random_trunk(both, tiny_pipeline_dir):
    sources = both.config.feature["aeroblade"]["autoencoders"]
    assert sources[0] == {"id": str(tiny_pipeline_dir), "subfolder": "vae", "revision": None}
    assert both.config.feature["aeroblade"]["layer"] == 2
    assert "random VGG16 trunk" in both.config.weights_source


def test_saved_detector_scores_the_same_after_loading(reals, tiny_pipeline_dir, tmp_path):
    trained = _detector(reals, [tiny_pipeline_dir], tmp_path / "d", layer=1)
    loaded = Detector.from_pretrained(tmp_path / "d", device="cpu")
    np.testing.assert_array_equal(
        trained.decision_function(reals[:3]), loaded.decision_function(reals[:3])
    )


def test_a_trained_autoencoder_reconstructs_its_own_output_more_closely(reals, tmp_path):
    """AEROBLADE's premise, on the shipped mini LDM's autoencoder (factor 4)."""
    mini = mini_ldm_dir()
    vae = load_autoencoder(mini, device="cpu")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    for path in reals[:6]:
        x = pil_to_uint8(load_image(path)).float()[None] / 255
        save_png(tensor_to_pil(reconstruct_any(vae, x)[0]), fakes / path.name)
    detector = _detector(reals, [mini], tmp_path / "mini", size=64, grid=4)
    real_scores = detector.decision_function(reals[:6])
    fake_scores = detector.decision_function(sorted(fakes.glob("*.png")))
    assert (fake_scores > real_scores).all()


def test_view_offsets_are_grid_aligned():
    image = tensor_to_pil(torch.rand(3, 50, 70))
    sample = AerobladeTransform(32, grid=8)(image)
    left, top, right, bottom = sample["box"].tolist()
    assert (left % 8, top % 8) == (0, 0) and (right - left, bottom - top) == (32, 32)
    assert sample["crops"].shape == (1, 3, 32, 32) and sample["crops"].dtype == torch.uint8


def test_autoencoder_sources(tiny_pipeline_dir):
    assert autoencoder_source(tiny_pipeline_dir).subfolder == "vae"
    assert autoencoder_source(tiny_pipeline_dir / "vae").subfolder is None
    assert autoencoder_source("kandinsky-community/kandinsky-2-1").subfolder == "movq"
    assert autoencoder_source("CompVis/stable-diffusion-v1-1").subfolder == "vae"
