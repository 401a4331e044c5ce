from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from ldmdetect import methods
from ldmdetect.config import DetectorConfig
from ldmdetect.detector import Detector, DetectorLoadError
from ldmdetect.features.cache import FeatureCache
from ldmdetect.io.identity import image_id
from ldmdetect.io.images import ImageDecodeError, load_image, pil_to_tensor


def test_save_and_load_give_identical_predictions(detector_dir, aligned_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    paths = sorted((aligned_dir / "real").glob("*.png"))[:4]
    before = detector.decision_function(paths)
    detector.save_pretrained(tmp_path / "copy")
    after = Detector.from_pretrained(tmp_path / "copy", device="cpu").decision_function(paths)
    np.testing.assert_array_equal(before, after)
    assert before.shape == (4,) and ((before >= 0) & (before <= 1)).all()


def test_predict_accepts_paths_images_and_tensors(detector_dir, aligned_dir):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    path = sorted((aligned_dir / "reconstructed").glob("*.png"))[0]
    image = Image.open(path).convert("RGB")
    from_path = detector.decision_function(path)
    np.testing.assert_allclose(detector.decision_function(image), from_path, rtol=1e-6)
    np.testing.assert_allclose(
        detector.decision_function(pil_to_tensor(image)), from_path, rtol=1e-6
    )
    assert detector.decision_function([path, image], tries=10).shape == (2,)


def test_predict_decides_at_the_calibrated_threshold_on_decision_function(
    detector_dir, aligned_dir
):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    paths = [
        *sorted((aligned_dir / "real").glob("*.png"))[:3],
        *sorted((aligned_dir / "reconstructed").glob("*.png"))[:3],
    ]
    scores = detector.decision_function(paths)
    for fpr in (None, 0.01):
        _, threshold = detector.config.threshold(fpr)
        labels = detector.predict(paths, fpr=fpr)
        assert labels.dtype == bool and labels.shape == (6,)
        assert labels.tolist() == (scores > threshold).tolist()
    # the scores straddle the 0.5 rule, so the comparison above can tell labels apart
    assert 0 < detector.predict(paths).sum() < 6


def test_predict_proba_rows_sum_to_one_and_hold_the_score(detector_dir, aligned_dir):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    paths = sorted((aligned_dir / "reconstructed").glob("*.png"))[:3]
    probabilities = detector.predict_proba(paths, tries=2)
    assert probabilities.shape == (3, len(detector.method.classes))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    generated = detector.method.classes.index("generated")
    np.testing.assert_allclose(
        probabilities[:, generated], detector.decision_function(paths, tries=2), rtol=1e-12
    )


def test_label_is_deprecated_and_decides_as_predict(detector_dir, aligned_dir):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    threshold = detector.config.thresholds["fpr_0.01"]
    scores = np.array([threshold - 1e-6, threshold, threshold + 1e-6])
    with pytest.warns(DeprecationWarning, match="predict"):
        assert detector.label(scores, fpr=0.01).tolist() == [False, False, True]
    paths = sorted((aligned_dir / "reconstructed").glob("*.png"))[:4]
    with pytest.warns(DeprecationWarning):
        old = detector.label(detector.decision_function(paths), fpr=0.01)
    np.testing.assert_array_equal(old, detector.predict(paths, fpr=0.01))


def test_bad_image_path_names_the_file(detector_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    bad = tmp_path / "x.png"
    bad.write_bytes(b"nope")
    with pytest.raises(ImageDecodeError, match=r"x.png"):
        detector.decision_function(bad)


def test_load_errors_are_clear(tmp_path, detector_dir, source_error):
    with pytest.raises(DetectorLoadError, match="no such directory") as info:
        Detector.from_pretrained(tmp_path / "missing")
    source_error(info, tmp_path / "missing", local=True)
    with pytest.raises(DetectorLoadError, match=r"not a detector directory"):
        Detector.from_pretrained(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(
        (detector_dir / "config.json").read_text().replace("mobilenetv3_small_050", "resnet18")
    )
    (broken / "model.safetensors").write_bytes((detector_dir / "model.safetensors").read_bytes())
    with pytest.raises(DetectorLoadError, match=r"weights do not match"):
        Detector.from_pretrained(broken)


def test_unreachable_hub_id_is_a_load_error(source_error):
    with pytest.raises(DetectorLoadError) as info:
        Detector.from_pretrained("nobody/no-such-detector")
    assert "HF_HUB_OFFLINE" in source_error(info, "nobody/no-such-detector", local=False)


def test_content_ids_are_computed_only_for_a_feature_cache(tmp_path):
    # vfm-probe reads an id only to key its feature cache: a scan without one skips the hash
    # of every decoded pixel, and one with it stores each image under its usual id.
    config = DetectorConfig(
        method="vfm-probe", backbone="timm:tf_efficientnet_lite0", input_size=32
    )
    detector = Detector(config, methods.get("vfm-probe").build_model(config), device="cpu")
    paths = []
    for i, size in enumerate([(40, 30), (30, 40)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((size[1], size[0], 3), 60 * i, dtype=np.uint8)).save(paths[-1])
    image = load_image(paths[0])
    assert "id" not in detector.prepare(image)
    uncached = detector.decision_function(paths)

    detector.feature_cache = FeatureCache(tmp_path / "cache", settings=detector.features.settings())
    assert detector.prepare(image)["id"] == image_id(image)
    np.testing.assert_allclose(detector.decision_function(paths), uncached, rtol=1e-6)
    assert set(detector.feature_cache.keys()) == {image_id(load_image(p)) for p in paths}


def test_a_detector_trained_channels_last_scores_in_that_layout_with_the_same_scores(
    detector_dir, aligned_dir, tmp_path
):
    """On a CPU the layout follows training (EfficientNet-Lite0 scores 1.5x faster in
    channels-last, ConvNeXt trains slower): only the memory layout differs, not the scores."""
    import shutil

    import torch

    paths = sorted((aligned_dir / "real").glob("*.png"))[:4]
    plain = Detector.from_pretrained(detector_dir, device="cpu")
    shutil.copytree(detector_dir, tmp_path / "cl")
    config = DetectorConfig.load(tmp_path / "cl")
    trained = {**config.training["config"], "channels_last": True}
    replace(config, training=config.training | {"config": trained}).save(tmp_path / "cl")
    fast = Detector.from_pretrained(tmp_path / "cl", device="cpu")

    def layout(detector: Detector) -> bool:
        weight = next(p for p in detector.model.parameters() if p.dim() == 4)
        return weight.is_contiguous(memory_format=torch.channels_last) and not (
            weight.is_contiguous()
        )

    assert not layout(plain) and layout(fast)
    np.testing.assert_allclose(
        fast.decision_function(paths, tries=3), plain.decision_function(paths, tries=3), atol=1e-5
    )


def test_a_pipeline_reads_every_generator_component_from_there(
    detector_dir, tiny_pipeline_dir, tmp_path, tiny_backbone
):
    """``--pipeline``: the same weights elsewhere (a local copy of a hub pipeline) stand in
    for the sources the config records; a method without generator components refuses it."""
    import shutil

    config = methods.make_config(
        "lare2", backbone=f"timm:{tiny_backbone}", pipeline=tiny_pipeline_dir
    )
    method = methods.get("lare2")
    Detector(config, method.build(config, pretrained=False)).save_pretrained(tmp_path / "lare2")
    moved = shutil.copytree(tiny_pipeline_dir, tmp_path / "moved")

    recorded = Detector.from_pretrained(tmp_path / "lare2", device="cpu")
    assert recorded.components is None  # the config's own sources
    assert {s["id"] for s in config.components.values()} == {str(tiny_pipeline_dir)}
    override = Detector.from_pretrained(tmp_path / "lare2", device="cpu", pipeline=moved)
    assert override.components is not None and set(override.components) >= set(config.components)
    assert {s["id"] for s in override.components.values()} == {str(moved)}
    assert all(s["subfolder"] == name for name, s in override.components.items())

    # An ae detector reads no generator component: a pipeline for it is an error, not ignored.
    with pytest.raises(ValueError, match="'ae' detector reads no generator component"):
        Detector.from_pretrained(detector_dir, device="cpu", pipeline=moved)
    with pytest.raises(ValueError, match="or a pipeline"):
        Detector.from_pretrained(
            detector_dir, device="cpu", pipeline=moved, components=config.components
        )
