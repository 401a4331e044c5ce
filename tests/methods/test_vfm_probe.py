"""The foundation-model probe: the logistic fit, the offline fallback, save/load, extract."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ldmdetect.detector import Detector
from ldmdetect.engine.extract import extract_features
from ldmdetect.engine.train import TrainConfig, train_detector
from ldmdetect.io.labeled import read_labeled
from ldmdetect.methods.vfm_probe import fit_linear_probe
from ldmdetect.methods.vfm_probe.model import OFFLINE_VFM, LinearProbe, embedding_dim, resolve_vfm

BACKBONE = "timm:tf_efficientnet_lite0"
SIZE = 32


def test_probe_separates_a_toy_problem_and_folds_the_scaler_exactly():
    rng = np.random.default_rng(0)
    # Real and generated differ along one direction, on features of very different scales.
    x = rng.normal(size=(200, 8)) * np.array([100.0, 1, 1, 1, 1, 1, 1, 0.01])
    y = (rng.random(200) < 0.5).astype(int)
    x[:, 7] += np.where(y == 1, 0.03, -0.03)
    probe = LinearProbe(8)
    summary = fit_linear_probe(probe, torch.from_numpy(x).float(), torch.from_numpy(y), c=10.0)
    with torch.no_grad():
        p = torch.sigmoid(probe(torch.from_numpy(x).float())).numpy()
    assert ((p > 0.5) == y).mean() > 0.95
    assert summary["train_acc"] == pytest.approx(((p > 0.5) == y).mean(), abs=0.01)


def test_probe_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        fit_linear_probe(LinearProbe(2), torch.zeros(4, 2), torch.zeros(4), c=1.0)


def test_unreachable_foundation_model_falls_back_and_says_so():
    with pytest.warns(UserWarning, match="offline ImageNet weights"):
        backbone, source = resolve_vfm("timm:vit_small_patch14_dinov2.lvd142m", SIZE)
    assert backbone == OFFLINE_VFM and source.startswith("offline package")


@pytest.fixture(scope="module")
def labeled(aligned_dir: Path):
    return read_labeled([aligned_dir / "real"], [aligned_dir / "reconstructed"])


def _train(labeled, out: Path, **kwargs) -> Detector:
    cfg = TrainConfig(
        method="vfm-probe",
        backbone=BACKBONE,
        input_size=SIZE,
        val_fraction=0.34,
        device="cpu",
        feature={"probe": {"C": 0.5}},
    )
    return train_detector([], out, cfg, examples=labeled, **kwargs)


def test_saved_probe_is_one_linear_layer_and_scores_identically(labeled, aligned_dir, tmp_path):
    trained = _train(labeled, tmp_path / "probe")
    weights = load_file(tmp_path / "probe" / "model.safetensors")
    dim = embedding_dim(BACKBONE, SIZE)
    assert {k: tuple(v.shape) for k, v in weights.items()} == {
        "linear.weight": (1, dim),
        "linear.bias": (1,),
    }
    assert trained.config.feature["embedding_dim"] == dim
    assert trained.config.weights_source.startswith("offline package")
    (entry,) = trained.config.training["history"]
    assert entry["probe"].startswith("LogisticRegression(C=0.5)") and "val_auc" in entry
    loaded = Detector.from_pretrained(tmp_path / "probe", device="cpu")
    files = sorted((aligned_dir / "real").glob("*.png"))[:3]
    np.testing.assert_array_equal(trained.decision_function(files), loaded.decision_function(files))


def test_extracted_embeddings_are_what_training_reads(labeled, aligned_dir, tmp_path):
    cache = tmp_path / "cache"
    summary = extract_features(
        "vfm-probe",
        [aligned_dir / "real", aligned_dir / "reconstructed"],
        cache,
        backbone=BACKBONE,
        input_size=SIZE,
        device="cpu",
    )
    assert summary.computed == len(labeled) and not summary.errors
    from_cache = _train(labeled, tmp_path / "a", feature_cache=cache)
    fresh = _train(labeled, tmp_path / "b")
    files = sorted((aligned_dir / "reconstructed").glob("*.png"))[:4]
    np.testing.assert_allclose(
        from_cache.decision_function(files), fresh.decision_function(files), atol=1e-4
    )
    assert from_cache.config.training["feature_cache"] == str(cache)
