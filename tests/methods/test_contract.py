"""Every registered method, end to end on tiny components: train or calibrate -> save ->
load -> scan (with a bad file) -> evaluate on held-out photos -> predict. A new method package
gives its tiny settings (``Method.tiny_settings``) and passes this test without any other change.

Each method trains on the reals and tiny-VAE reconstructions of six photos and must separate
those of six others it has never seen (see MIN_HELDOUT_AUC)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ldmdetect import methods
from ldmdetect.detector import Detector
from ldmdetect.engine.evaluate import evaluate
from ldmdetect.engine.scan import scan, write_rows
from ldmdetect.engine.train import TrainConfig, make_config, train_detector
from ldmdetect.io.images import load_image
from ldmdetect.io.labeled import read_labeled

# Each method package's tiny settings (``Method.tiny_settings``), so each runs in seconds.
TINY_SETTINGS: dict[str, dict] = {
    name: methods.get(name).tiny_settings for name in methods.list_methods()
}

# The least held-out AUC: the tiny VAE has random weights, so its reconstructions lose the
# photos' colours and textures, and a detector that learns anything separates them.
MIN_HELDOUT_AUC = 0.9
# aeroblade trains nothing, so it checks its premise instead: the autoencoder's own outputs
# reconstruct closer than photos do (0.90 with the random-VGG LPIPS used offline; a lower bar,
# since LPIPS with ImageNet VGG weights measures otherwise).
MIN_HELDOUT_AUC_UNTRAINED = 0.75


def test_every_registered_method_has_tiny_settings():
    assert set(methods.list_methods()) <= set(TINY_SETTINGS)
    missing = [name for name, settings in TINY_SETTINGS.items() if settings is None]
    assert missing == [], f"methods without tiny_settings: {missing}"


def _with_tiny_pipeline(settings: dict, pipeline: Path) -> dict:
    """``"<tiny>"`` anywhere in the settings -> the tiny pipeline's directory."""
    return json.loads(json.dumps(settings).replace('"<tiny>"', json.dumps(str(pipeline))))


@pytest.fixture(scope="module")
def labeled(aligned_dir: Path):
    return read_labeled([aligned_dir / "real"], [aligned_dir / "reconstructed"])


@pytest.fixture
def contract(
    labeled, aligned_dir, heldout_aligned_dir, tiny_pipeline_dir, calibration_dir, tmp_path
):
    """``contract(name)``: the whole contract run for one method, on this test's fixtures."""

    def run(name: str) -> None:
        check_contract(
            name,
            labeled,
            aligned_dir,
            heldout_aligned_dir,
            tiny_pipeline_dir,
            calibration_dir,
            tmp_path,
        )

    return run


@pytest.mark.parametrize("name", sorted(TINY_SETTINGS))
def test_method_contract(name, contract):
    contract(name)


def test_a_method_from_a_new_package_passes_the_contract(throwaway_method, contract):
    """A package outside ldmdetect registers through its entry point; nothing else changes."""
    name = throwaway_method()
    assert name not in TINY_SETTINGS and name in methods.list_methods()
    contract(name)


def check_contract(
    name, labeled, aligned_dir, heldout_aligned_dir, tiny_pipeline_dir, calibration_dir, tmp_path
):
    """Train or calibrate -> save -> load -> scan -> evaluate -> serve -> predict."""
    method = methods.get(name)
    cfg = TrainConfig(
        method=name,
        batch_size=8,
        val_fraction=0.34,
        device="cpu",
        seed=0,
        # Every method, training-free ones too, calibrates on reals of several sources.
        calibration_reals=(str(calibration_dir),),
        **{"epochs": 1} | _with_tiny_pipeline(method.tiny_settings, tiny_pipeline_dir),
    )
    out = tmp_path / "detector"
    pipeline = tiny_pipeline_dir if method.components else None
    trained = train_detector([], out, cfg, examples=labeled, pipeline=pipeline)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert "fpr_0.01" in trained.config.thresholds
    assert (trained.config.calibration["n_real"], trained.config.calibration["n_sources"]) == (
        120,
        6,
    )
    assert "fpr_0.001" not in trained.config.thresholds  # 120 reals cannot resolve 0.1%
    if method.trains:
        assert len(trained.config.training["history"]) == cfg.epochs
    # Generator components are recorded by source, never saved with the weights.
    assert set(trained.config.components) == set(method.components)
    assert not list(out.glob("*/diffusion_pytorch_model*"))

    detector = Detector.from_pretrained(out, device="cpu")
    scan_dir = tmp_path / "scan"
    scan_dir.mkdir()
    files = sorted((aligned_dir / "real").glob("*.png"))[:2]
    for f in files:
        (scan_dir / f.name).write_bytes(f.read_bytes())
    (scan_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rows = scan(detector, sorted(scan_dir.iterdir()), fpr=0.01)
    assert len(rows) == 3
    bad = [r for r in rows if r.error]
    assert [Path(r.path).name for r in bad] == ["broken.png"]
    if method.probabilistic:
        assert all(0.0 <= r.score <= 1.0 for r in rows if not r.error)
    else:  # a score on its own scale: finite, and the calibrated thresholds are on it
        assert all(np.isfinite(r.score) for r in rows if not r.error)
        assert "0.5" not in trained.config.thresholds

    evaluation = evaluate(
        detector,
        [heldout_aligned_dir / "real"],
        {"tiny": [heldout_aligned_dir / "reconstructed"]},
        tries=(1, 2),
    )
    # Held-out reconstructions score above held-out photos.
    least = MIN_HELDOUT_AUC if method.trains else MIN_HELDOUT_AUC_UNTRAINED
    auc = evaluation.result["mean"]["auc"]
    # The built-in methods must learn; a throwaway package's toy CNN only checks the plumbing.
    if name in TINY_SETTINGS:
        assert auc >= least, f"{name}: held-out AUC {auc:.3f} < {least}"
    assert set(evaluation.result["tries"]) == {"1", "2"}
    # accuracy at the fixed 0.5 cut is reported only where the score is a probability
    assert ("acc" in evaluation.result["mean"]) == method.probabilistic

    # the service's Hugging Face-shaped predictions: "real" = 1 - score only for probabilities
    from fastapi.testclient import TestClient

    from ldmdetect.serve import create_app

    with TestClient(create_app(detector)) as client:
        body = client.post(
            "/v1/detect", files={"file": ("a.png", files[0].read_bytes(), "image/png")}
        ).json()
    labels = [p["label"] for p in body["predictions"]]
    base = ["generated", "real"] if method.probabilistic else ["generated"]
    assert labels[: len(base)] == base
    # a several-class method's other classes follow, most likely first
    others = [c for c in detector.classes if c not in ("real", "generated")]
    assert sorted(labels[len(base) :]) == sorted(others)
    scores = [p["score"] for p in body["predictions"][len(base) :]]
    assert scores == sorted(scores, reverse=True)

    # predict on a decoded image equals the scan's score for the same file
    score = detector.decision_function(load_image(files[0]))
    row = next(r for r in rows if Path(r.path).name == files[0].name)
    np.testing.assert_allclose(score[0], row.score, rtol=1e-5, atol=1e-6)

    # An ensemble of the network and a perturbed copy gives their mean probabilities: what
    # the method's logits_per_view says of its network's outputs (one sigmoid logit, or a
    # softmax over several) holds.
    if method.trains:
        from ldmdetect.engine.ensemble import ensemble_detectors

        torch.manual_seed(0)
        other = Detector.from_pretrained(out, device="cpu")
        with torch.no_grad():
            for parameter in other.model.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter) * (parameter.abs().mean() + 1e-3))
        other.save_pretrained(tmp_path / "perturbed")
        both = ensemble_detectors([out, tmp_path / "perturbed"], tmp_path / "both", device="cpu")
        mean = (detector.predict_proba(files) + other.predict_proba(files)) / 2
        assert not np.allclose(detector.predict_proba(files), other.predict_proba(files))
        np.testing.assert_allclose(both.detector.predict_proba(files), mean, atol=1e-5)

    # the explain hook: None for methods with nothing to show, else one map per image that
    # evidence_map places over the whole image
    image = load_image(files[0])
    explained = detector.explain([image, image])
    evidence = detector.evidence_map(image)
    if not method.explains:
        assert explained is None and evidence is None
    else:
        assert len(explained) == 2
        assert evidence.shape == (image.height, image.width)
        assert ((evidence >= 0) & (evidence <= 1)).all()


@pytest.mark.parametrize("name", sorted(TINY_SETTINGS))
def test_feature_steps_resolve_their_device_and_refuse_cuda_without_it(name, tiny_pipeline_dir):
    method = methods.get(name)
    cfg = TrainConfig(method=name, **_with_tiny_pipeline(TINY_SETTINGS[name], tiny_pipeline_dir))
    pipeline = tiny_pipeline_dir if method.components else None
    config = make_config(cfg, method, pipeline=pipeline)
    step = method.build_features(config, device="auto")
    if step is None:
        pytest.skip(f"{name} reads pixels only: no feature step")
    assert step.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():  # asked for, not silently run on the CPU
        with pytest.raises(ValueError, match="CUDA is not available"):
            method.build_features(config, device="cuda")


def test_a_three_class_method_passes_the_contract_with_per_class_outputs(
    throwaway_method, contract, aligned_dir, tmp_path
):
    """K > 2: per-class probabilities beside the score, in predict_proba, scan rows (and
    their CSV columns) and the service reply (p_<class> keys); the score is 1 - P(real)."""
    classes = ("real", "sd", "flux")
    name = throwaway_method(classes)
    assert methods.get(name).classes == classes
    contract(name)
    detector = Detector.from_pretrained(tmp_path / "detector", device="cpu")
    files = sorted((aligned_dir / "real").glob("*.png"))[:3]
    probabilities = detector.predict_proba(files)
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        detector.decision_function(files), 1 - probabilities[:, 0], rtol=1e-12
    )

    rows = scan(detector, files, fpr=None, journal=tmp_path / "scan.jsonl")
    assert [list(r.probabilities) for r in rows] == [list(classes)] * 3
    assert scan(detector, files, fpr=None, journal=tmp_path / "scan.jsonl") == rows  # resumed
    np.testing.assert_allclose([r.probabilities["sd"] for r in rows], probabilities[:, 1])
    out = write_rows(rows, tmp_path / "scan.csv")
    header = out.read_text().splitlines()[0].split(",")
    assert header[-3:] == ["p_real", "p_sd", "p_flux"]

    from fastapi.testclient import TestClient

    from ldmdetect.serve import create_app

    with TestClient(create_app(detector)) as client:
        body = client.post(
            "/v1/detect", files={"file": ("a.png", files[0].read_bytes(), "image/png")}
        ).json()
    assert [key for key in body if key.startswith("p_")] == [f"p_{c}" for c in classes]
    # one image per device batch there, three here: float32 sums in another order
    assert body["p_flux"] == pytest.approx(probabilities[0, 2], rel=1e-6)


def test_binary_scan_rows_and_replies_keep_their_shape(tmp_path):
    """Two classes: no per-class columns, the CSV and JSON rows as they were."""
    from ldmdetect.engine.scan import ScanRow

    rows = [ScanRow("a.png", 0.25, "real", "0.5", "", "real")]
    header = write_rows(rows, tmp_path / "scan.csv").read_text().splitlines()[0]
    assert header == "path,score,label,threshold,error,verdict"
    saved = json.loads(write_rows(rows, tmp_path / "scan.json").read_text())
    assert list(saved[0]) == ["path", "score", "label", "threshold", "error", "verdict"]
