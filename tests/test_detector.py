import numpy as np
import pytest
from PIL import Image

from ldmdetect.detector import Detector, DetectorLoadError
from ldmdetect.io.images import ImageDecodeError, pil_to_tensor


def test_save_and_load_give_identical_predictions(detector_dir, aligned_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    paths = sorted((aligned_dir / "real").glob("*.png"))[:4]
    before = detector.predict(paths)
    detector.save_pretrained(tmp_path / "copy")
    after = Detector.from_pretrained(tmp_path / "copy", device="cpu").predict(paths)
    np.testing.assert_array_equal(before, after)
    assert before.shape == (4,) and ((before >= 0) & (before <= 1)).all()


def test_predict_accepts_paths_images_and_tensors(detector_dir, aligned_dir):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    path = sorted((aligned_dir / "reconstructed").glob("*.png"))[0]
    image = Image.open(path).convert("RGB")
    from_path = detector.predict(path)
    np.testing.assert_allclose(detector.predict(image), from_path, rtol=1e-6)
    np.testing.assert_allclose(detector.predict(pil_to_tensor(image)), from_path, rtol=1e-6)
    assert detector.predict([path, image], tries=10).shape == (2,)


def test_label_uses_the_calibrated_threshold(detector_dir):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    threshold = detector.config.thresholds["fpr_0.01"]
    scores = np.array([threshold - 1e-6, threshold, threshold + 1e-6])
    assert detector.label(scores, fpr=0.01).tolist() == [False, False, True]


def test_bad_image_path_names_the_file(detector_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    bad = tmp_path / "x.png"
    bad.write_bytes(b"nope")
    with pytest.raises(ImageDecodeError, match=r"x.png"):
        detector.predict(bad)


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
