import pytest
import timm
import torch

from ldmdetect.models.classifier import (
    BackboneClassifier,
    PretrainedWeightsUnavailable,
    backbone_normalization,
)


def test_cnn_backbone_gives_one_logit_per_image():
    model = BackboneClassifier("mobilenetv3_small_050", input_size=64).eval()
    assert model(torch.rand(3, 3, 64, 64)).shape == (3,)
    assert model.weights_source == "random"


def test_vit_backbone_is_built_for_the_input_size():
    model = BackboneClassifier("vit_tiny_patch16_224", input_size=64).eval()
    assert model.net.patch_embed.img_size == (64, 64)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2,)


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ValueError, match=r"Did you mean.*convnext_large"):
        BackboneClassifier("convnxt_large")


def test_pretrained_offline_fails_clearly(source_error, tmp_path):
    with pytest.raises(PretrainedWeightsUnavailable, match=r"resnet18.*--pretrained-file") as info:
        BackboneClassifier("resnet18", pretrained=True)
    source_error(info, "timm/resnet18.a1_in1k", local=False)
    with pytest.raises(PretrainedWeightsUnavailable, match="no such file") as info:
        BackboneClassifier("resnet18", pretrained=tmp_path / "missing.pth")
    source_error(info, tmp_path / "missing.pth", local=True)


def test_pretrained_file_loads_the_body_and_gives_a_fresh_head(tmp_path):
    # A local ImageNet checkpoint (1000 classes), as users download one for offline machines.
    reference = timm.create_model("mobilenetv3_small_050")
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    model = BackboneClassifier("mobilenetv3_small_050", pretrained=tmp_path / "weights.pth")
    loaded = model.net.state_dict()
    for name, tensor in reference.state_dict().items():
        if not name.startswith("classifier."):
            torch.testing.assert_close(loaded[name], tensor, msg=name)
    assert loaded["classifier.weight"].shape[0] == 1
    assert model.weights_source == f"file {tmp_path / 'weights.pth'}"


def test_normalization_follows_the_backbone():
    assert backbone_normalization("resnet50")[0] == pytest.approx((0.485, 0.456, 0.406))
    clip_mean = backbone_normalization("eva02_large_patch14_224")[0]
    assert clip_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


@pytest.mark.parametrize("backbone", ["mobilenetv3_small_050", "resnet18"])
def test_a_fresh_head_starts_every_score_at_one_half(backbone):
    # timm's EfficientNet/MobileNet init puts a one-logit head in [-1, 1]: logits of tens and
    # a saturated sigmoid before the first step. The detector's head starts at zero instead.
    model = BackboneClassifier(backbone, input_size=64).eval()
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(images), torch.zeros(4))
