import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ldmdetect.config import WEIGHTS_NAME, DetectorConfig
from ldmdetect.engine.reconstruct import read_aligned_dataset
from ldmdetect.engine.train import AugmentConfig, TrainConfig, train_detector
from ldmdetect.io.images import load_image


def _small(**overrides) -> TrainConfig:
    """A TrainConfig that trains the smallest timm network on the CPU in seconds."""
    small = dict(backbone="mobilenetv3_small_050", epochs=1, val_fraction=0.34, device="cpu")
    return TrainConfig(**(small | overrides))


def test_trained_detector_directory(detector_dir):
    config = DetectorConfig.load(detector_dir)
    assert (detector_dir / "model.safetensors").is_file()
    assert config.method == "ae" and config.input_size == 64
    # Calibrated on the 120 reals of six sources (calibration_reals): 1% and 5% resolve,
    # 0.1% would need 999 reals and is recorded as unresolved, not stored.
    assert set(config.thresholds) == {"0.5", "fpr_0.01", "fpr_0.05"}
    record = config.calibration
    assert (record["n_real"], record["n_sources"]) == (120, 6)
    assert record["thresholds"]["fpr_0.001"] == {
        "fpr": 0.001,
        "needs_n_real": 999,
        "resolved": False,
    }
    one = record["thresholds"]["fpr_0.01"]
    assert one["resolved"] and one["threshold"] == config.thresholds["fpr_0.01"]
    assert one["flagged"] <= 1 and one["fpr_upper_95"] > 0.01
    assert config.generator["subfolder"] == "vae"
    assert config.training["pairs"]["val"] > 0
    history = config.training["history"]
    assert len(history) == 10 and all(np.isfinite(h["train_loss"]) for h in history)
    json.dumps(config.to_dict())


def test_detector_learns_the_autoencoder_trace(detector_dir):
    # The tiny random autoencoder leaves a blatant trace; held-out sources must separate.
    history = DetectorConfig.load(detector_dir).training["history"]
    # 8 real + 8 fake validation crops: AUC moves in steps of 1/64, so leave room for that.
    assert history[-1]["val_auc"] > 0.85


def test_training_is_deterministic_with_a_seed(tmp_path, aligned_dir):
    cfg = _small(batch_size=8, seed=3)
    a = train_detector([aligned_dir], tmp_path / "a", cfg)
    b = train_detector([aligned_dir], tmp_path / "b", cfg)
    for (name, p), q in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(p, q, msg=name)


@pytest.mark.parametrize(("channels_last", "expected"), [(True, True), (None, False)])
def test_channels_last_is_the_layout_trained_in_and_weights_are_saved_plain(
    tmp_path, aligned_dir, monkeypatch, channels_last, expected
):
    # None (the default) means channels-last on a GPU only, so plain layout on this CPU run.
    layouts = set()
    forward = torch.nn.Conv2d.forward

    def recording(self, x):
        # Activations past the stem, with a spatial extent: only there is the layout visible.
        if self.training and x.shape[1] > 3 and x.shape[-1] * x.shape[-2] > 1:
            layouts.add(
                x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            )
        return forward(self, x)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", recording)
    cfg = _small(batch_size=8, channels_last=channels_last)
    detector = train_detector([aligned_dir], tmp_path / "d", cfg)
    assert layouts == {expected}
    # The detector may score channels-last, but its file holds the same values in the plain
    # layout, so any loader reads them back unchanged.
    saved = load_file(tmp_path / "d" / WEIGHTS_NAME)
    for name, tensor in detector.model.state_dict().items():
        assert saved[name].is_contiguous()
        torch.testing.assert_close(saved[name], tensor.cpu(), msg=name)
    assert DetectorConfig.load(tmp_path / "d").training["config"]["channels_last"] is channels_last


def test_ema_saves_the_warmed_up_moving_average_of_every_step(tmp_path, aligned_dir, monkeypatch):
    # Record the weights after every optimizer step, then average them by hand with the
    # documented decay, min(ema_decay, 1 - step^(-2/3)); the saved weights must be that average.
    steps: list[list[torch.Tensor]] = []
    step = torch.optim.AdamW.step

    def recording(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        steps.append([p.detach().clone() for g in self.param_groups for p in g["params"]])
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    decay = 0.6
    cfg = _small(epochs=2, batch_size=4, ema_decay=decay)
    detector = train_detector([aligned_dir], tmp_path / "d", cfg)
    assert len(steps) >= 4
    average = steps[0]
    for k, weights in enumerate(steps[1:], start=2):
        d = min(decay, 1 - k ** (-2 / 3))
        average = [d * a + (1 - d) * w for a, w in zip(average, weights, strict=True)]
    saved = [p for p in detector.model.parameters() if p.requires_grad]
    assert len(saved) == len(average)
    for a, p in zip(average, saved, strict=True):
        torch.testing.assert_close(p, a, rtol=1e-4, atol=1e-6)
    # ... and it is not simply the last step's weights.
    assert any(not torch.allclose(p, w) for p, w in zip(saved, steps[-1], strict=True))
    assert DetectorConfig.load(tmp_path / "d").training["config"]["ema_decay"] == decay


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_ema_decay_outside_the_open_unit_interval_is_an_error(tmp_path, aligned_dir, decay):
    cfg = _small(ema_decay=decay)
    with pytest.raises(ValueError, match="ema_decay"):
        train_detector([aligned_dir], tmp_path / "d", cfg)


def test_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest"):
        train_detector([tmp_path], tmp_path / "out")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_cuda_is_an_error_not_a_cpu_run(tmp_path, aligned_dir):
    with pytest.raises(ValueError, match="CUDA is not available"):
        train_detector([aligned_dir], tmp_path / "d", _small(device="cuda"))
    assert not (tmp_path / "d").exists()


def test_zero_epochs_still_calibrates_and_saves(tmp_path, aligned_dir):
    cfg = _small(epochs=0)
    detector = train_detector([aligned_dir], tmp_path / "d", cfg)
    assert detector.config.training["history"] == []
    # The validation split's few reals (crops of two photos) resolve no threshold: each is
    # recorded as unresolved with the count it needs, and only the raw 0.5 rule is stored.
    assert detector.config.thresholds == {"0.5": 0.5}
    record = detector.config.calibration
    assert record["n_real"] == detector.config.training["pairs"]["val"]
    assert record["n_sources"] == 2
    assert {k: v["resolved"] for k, v in record["thresholds"].items()} == {
        "fpr_0.001": False,
        "fpr_0.01": False,
        "fpr_0.05": False,
    }
    assert DetectorConfig.load(tmp_path / "d").calibration == record


def test_one_process_trains_after_an_accelerator_with_other_settings(tmp_path, aligned_dir):
    # A notebook or sweep may have made an Accelerator with another precision (or trained on a
    # GPU) before; accelerate's process-wide state would refuse this CPU run without the reset.
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # as a fresh process: earlier tests trained here too
    Accelerator(cpu=True, mixed_precision="bf16")
    cfg = _small()
    try:
        detector = train_detector([aligned_dir], tmp_path / "d", cfg)
    finally:
        AcceleratorState._reset_state()
    assert detector.config.training["history"]


def test_a_corrupt_first_pair_is_skipped_and_named_not_fatal(tmp_path, aligned_dir):
    # The input size comes from the pairs' crops: the first one failing to decode must not end
    # the run before the training loop can skip and report it.
    data = tmp_path / "data"
    shutil.copytree(aligned_dir, data)
    first = read_aligned_dataset(data)[0]
    Path(first.real).write_bytes(b"not a PNG")
    cfg = _small()
    detector = train_detector([data], tmp_path / "d", cfg)
    assert list(detector.config.training["skipped_files"]) == [str(first.real)]
    assert detector.config.input_size == 64


def test_an_augmentation_a_method_does_not_apply_is_an_error(tmp_path, aligned_dir):
    cfg = TrainConfig(method="lare2", augment=AugmentConfig(jpeg_prob=0.9))
    with pytest.raises(ValueError, match="'lare2' does not apply --augment"):
        train_detector([aligned_dir], tmp_path / "d", cfg)
    assert not (tmp_path / "d").exists()


def test_ae_on_two_families_trains_a_family_head(family_detector_dir, two_family_aligned_dir):
    from ldmdetect.detector import Detector

    config = DetectorConfig.load(family_detector_dir)
    assert config.families == ("sd-4ch", "flux-16ch")
    listed = json.loads((family_detector_dir / "config.json").read_text())
    assert listed["families"] == ["sd-4ch", "flux-16ch"]  # the directory names its families
    assert config.family_threshold is not None and 0.0 <= config.family_threshold <= 1.0
    record = config.training["families"]
    assert record["classes"] == ["real", "sd-4ch", "flux-16ch"]
    assert record["threshold_on"].endswith("held-out reconstructions")
    detector = Detector.from_pretrained(family_detector_dir, device="cpu")
    assert detector.classes == ("real", "sd-4ch", "flux-16ch")
    pair = read_aligned_dataset(two_family_aligned_dir)[0]
    images = [str(pair.real)] + [str(path) for _, path in pair.reconstructions]
    assert detector.logits_batch([detector.prepare(load_image(images[0]))]).shape == (1, 1, 3)
    proba = detector.predict_proba(images)
    assert proba.shape == (3, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # The score is 1 - P(real), so thresholds keep their meaning.
    np.testing.assert_allclose(detector.decision_function(images), 1 - proba[:, 0])
    attributions = detector.attribute(images, fpr=None)
    judged = detector.predict(images, fpr=None)
    _, _, novel = detector.score_probabilities_novel([detector.prepare(load_image(images[0]))])
    assert novel is not None and novel.shape == (1,)
    for attribution, generated in zip(attributions, judged, strict=True):
        if generated:
            assert attribution.family in ("sd-4ch", "flux-16ch", "unknown")
        else:
            assert attribution.family in (None, "unknown")  # unknown: novel to every class


def test_a_family_head_saves_its_novelty_statistics_and_old_directories_load_without(
    tmp_path, family_detector_dir, two_family_aligned_dir
):
    from ldmdetect.attribution import NOVELTY_NAME
    from ldmdetect.detector import Detector

    detector = Detector.from_pretrained(family_detector_dir, device="cpu")
    novelty = detector.novelty
    assert novelty is not None and novelty.classes == detector.classes
    assert novelty.threshold is not None  # set on the validation reals
    assert novelty.record["threshold_on"].endswith("held-out validation real crops")
    assert novelty.means.shape[0] == 3
    old = tmp_path / "old"
    shutil.copytree(family_detector_dir, old)
    (old / NOVELTY_NAME).unlink()
    before = Detector.from_pretrained(old, device="cpu")
    assert before.novelty is None
    broken = tmp_path / "broken"
    shutil.copytree(old, broken)
    (broken / NOVELTY_NAME).write_bytes(b"not safetensors")
    from ldmdetect.detector import DetectorLoadError

    with pytest.raises(DetectorLoadError, match=r"novelty\.safetensors: unreadable novelty"):
        Detector.from_pretrained(broken, device="cpu")
    reals = [str(p.real) for p in read_aligned_dataset(two_family_aligned_dir)]
    judged = before.predict(reals, fpr=None)
    found = before.attribute(reals, fpr=None)
    # The old rule: a judged-real image gets no family, whatever lies where.
    assert all(a.family is None for a, g in zip(found, judged, strict=True) if not g)
    # Calibration re-derives the novelty threshold on its reals, at its views.
    from ldmdetect.engine.calibrate import calibrate_detector

    calibrated = calibrate_detector(family_detector_dir, reals, tmp_path / "cal", tries=2)
    again = Detector.from_pretrained(tmp_path / "cal", device="cpu")
    assert again.novelty.record["threshold_on"] == f"{len(reals)} calibration real images, 2-try"
    assert calibrated.config.calibration["novelty"]["n_real"] == len(reals)


def test_a_family_head_calibrated_in_training_returns_its_recalibrated_novelty_rule(
    tmp_path, two_family_aligned_dir
):
    """train_detector's returned detector is the one it saved: with calibration reals, the
    novelty threshold calibration re-derived on them, not a detector without the rule."""
    from ldmdetect.detector import Detector

    returned = train_detector(
        [two_family_aligned_dir],
        tmp_path / "det",
        _small(
            backbone="resnet10t",
            batch_size=4,
            calibration_reals=(str(two_family_aligned_dir),),
        ),
    )
    saved = Detector.from_pretrained(tmp_path / "det", device="cpu")
    assert returned.novelty is not None
    assert returned.novelty.record["threshold_on"].endswith("calibration real images, 1-try")
    assert returned.novelty.threshold == saved.novelty.threshold
    assert returned.config.calibration == saved.config.calibration


def test_family_head_only_for_methods_that_attribute_and_tagged_data(two_family_aligned_dir):
    from ldmdetect.engine.reconstruct import AlignedPair
    from ldmdetect.engine.train_families import head_families

    pairs = read_aligned_dataset(two_family_aligned_dir)
    assert head_families("ae", pairs, [two_family_aligned_dir]) == ("sd-4ch", "flux-16ch")
    assert head_families("aeroblade", pairs, [two_family_aligned_dir]) == ()
    one = [AlignedPair(p.pair_id, p.source, p.real, p.reconstructions[:1]) for p in pairs]
    assert head_families("ae", one, [two_family_aligned_dir]) == ()  # one family: binary
    untagged = [AlignedPair("x", "s", pairs[0].real, (("", pairs[0].reconstructed),))]
    with pytest.raises(ValueError, match="NAME=SRC"):
        head_families("ae", pairs + untagged, [two_family_aligned_dir])


def test_a_family_head_also_learns_from_each_familys_generations(
    tmp_path, two_family_aligned_dir, tiny_family_dir
):
    from ldmdetect.engine.train_families import family_generations
    from ldmdetect.generative.sampling import load_pipeline, write_generated

    generated = {}
    for family, kind in (("sd-4ch", "sd"), ("flux-16ch", "flux")):
        generated[family] = tmp_path / family
        write_generated(
            load_pipeline(str(tiny_family_dir(kind)), device="cpu"),
            ["a photo"] * 4,
            [50_000 + i for i in range(4)],
            generated[family],
            size=32,
            steps=2,
        )
    examples = family_generations(list(generated.items()), ("sd-4ch", "flux-16ch"))
    # Label 1 + the family's index: the head's class for that family.
    assert sorted({e.label for e in examples if "flux-16ch" in e.path}) == [2]
    assert sorted({e.label for e in examples if "sd-4ch" in e.path}) == [1]
    out = tmp_path / "detector"
    cfg = TrainConfig(
        backbone="resnet10t", epochs=1, batch_size=4, val_fraction=0.34, seed=0, device="cpu"
    )
    train_detector([two_family_aligned_dir], out, cfg, generated=list(generated.items()))
    record = DetectorConfig.load(out).training["generated"]
    assert record["train"]["sd-4ch"] + record["val"]["sd-4ch"] == 4
    assert record["val"]["flux-16ch"] >= 1  # the validation split holds generations too
    with pytest.raises(ValueError, match="family 'sdxl'"):
        family_generations([("sdxl", generated["sd-4ch"])], ("sd-4ch", "flux-16ch"))
    with pytest.raises(ValueError, match="need a family head"):
        family_generations([("sd-4ch", generated["sd-4ch"])], ())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no images"):
        family_generations([("sd-4ch", tmp_path / "empty")], ("sd-4ch", "flux-16ch"))


@pytest.fixture(scope="module")
def outlier_aligned_dir(tmp_path_factory, photo_dir) -> Path:
    """The same photos' 32 px crops through a tiny random autoencoder of no known family
    (tagged ``aux``): Outlier Exposure data."""
    from ldmdetect.engine.reconstruct import ReconstructConfig, build_aligned_dataset
    from ldmdetect.generative.tiny import build_tiny_autoencoder

    root = tmp_path_factory.mktemp("outliers")
    build_tiny_autoencoder(seed=5).save_pretrained(root / "vae")
    build_aligned_dataset(
        [photo_dir],
        root / "data",
        autoencoder=[("aux", str(root / "vae"))],
        config=ReconstructConfig(crop_size=32, crops_per_image=2, seed=0),
        device="cpu",
    )
    return root / "data"


def test_outlier_pairs_are_tagged_other_and_refused_where_they_cannot_teach_it(
    outlier_aligned_dir, two_family_aligned_dir
):
    from ldmdetect.engine.train_families import outlier_pairs

    found = outlier_pairs([outlier_aligned_dir], ("sd-4ch", "flux-16ch"))
    original = read_aligned_dataset(outlier_aligned_dir)
    assert len(found) == len(original) > 0
    assert {f for p in found for f in p.families} == {"other"}
    # Pair ids of their own: never confused with a family pair of the same crop.
    assert all(p.pair_id == f"other:{q.pair_id}" for p, q in zip(found, original, strict=True))
    with pytest.raises(ValueError, match="needs a family head"):
        outlier_pairs([outlier_aligned_dir], ())
    with pytest.raises(ValueError, match="reconstructed through flux-16ch, sd-4ch"):
        outlier_pairs([two_family_aligned_dir], ("sd-4ch", "flux-16ch"))
    with pytest.raises(ValueError, match="name of the outlier class"):
        outlier_pairs([outlier_aligned_dir], ("sd-4ch", "other"))


def test_outlier_data_trains_an_other_class_that_is_no_family(
    tmp_path, two_family_aligned_dir, outlier_aligned_dir
):
    from ldmdetect.detector import Detector

    cfg = TrainConfig(
        backbone="resnet10t", epochs=2, batch_size=4, val_fraction=0.34, device="cpu", seed=0
    )
    train_detector([two_family_aligned_dir], tmp_path / "d", cfg, outliers=[outlier_aligned_dir])
    detector = Detector.from_pretrained(tmp_path / "d", device="cpu")
    assert detector.classes == ("real", "sd-4ch", "flux-16ch", "other")
    assert detector.families == ("sd-4ch", "flux-16ch")  # "other" is never an answer
    training = detector.config.training
    assert training["outliers"] == [str(outlier_aligned_dir)]
    assert set(detector.config.family_sources) == {"sd-4ch", "flux-16ch"}
    record = training["families"]
    # The family threshold is set on the known families' held-out reconstructions alone
    # (12 pairs, a third held out, two families), the outliers' own share reported beside.
    assert record["threshold_on"] == "8 held-out reconstructions"
    assert 0.0 <= record["val_other_share"] <= 1.0
    assert detector.novelty.means.shape[0] == 4  # every class has its mean, "other" too
    images = [str(p) for p in sorted((outlier_aligned_dir / "reconstructed").glob("*.png"))]
    found = detector.attribute(images, fpr=None)
    assert all(a.family in (None, "sd-4ch", "flux-16ch", "unknown") for a in found)
