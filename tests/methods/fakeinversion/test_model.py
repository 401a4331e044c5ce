"""FakeInversion's classifier: a widened stem, one logit, 3-channel weights adapted."""

import pytest
import timm
import torch

from ldmdetect.methods.fakeinversion.model import FakeInversionNet, input_channels

TEST_BACKBONE = "mobilenetv3_small_050"  # as in tests/conftest.py: small and fast


@pytest.mark.parametrize(("residual", "channels"), [(False, 9), (True, 12)])
def test_stem_takes_the_stacked_inputs_and_gives_one_logit(residual, channels):
    assert input_channels(residual) == channels
    model = FakeInversionNet(TEST_BACKBONE, residual=residual).eval()
    assert model.in_chans == channels and model.weights_source == "random"
    assert model(torch.randn(2, channels, 32, 32)).shape == (2,)
    with pytest.raises(ValueError, match=f"expected {channels} input channels"):
        model(torch.randn(2, 3, 32, 32))


def test_default_is_resnet50_with_a_9_channel_stem():
    with torch.device("meta"):
        model = FakeInversionNet()
    assert model.net.conv1.in_channels == 9 and model.net.fc.out_features == 1


def test_pretrained_3_channel_weights_are_spread_over_the_wider_stem(tmp_path):
    reference = timm.create_model(TEST_BACKBONE)
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    model = FakeInversionNet(TEST_BACKBONE, pretrained=tmp_path / "weights.pth")
    stem = reference.state_dict()["conv_stem.weight"]
    loaded = model.net.state_dict()["conv_stem.weight"]
    assert loaded.shape[1] == 9
    for group in range(3):  # each RGB group gets the RGB filters, rescaled by 3 / 9
        torch.testing.assert_close(loaded[:, 3 * group : 3 * group + 3], stem / 3)
    torch.testing.assert_close(
        model.net.state_dict()["blocks.0.0.conv_dw.weight"],
        reference.state_dict()["blocks.0.0.conv_dw.weight"],
    )
    assert model.net.state_dict()["classifier.weight"].shape[0] == 1


def test_head_starts_at_zero():
    model = FakeInversionNet(TEST_BACKBONE).eval()
    with torch.no_grad():
        assert torch.equal(model(torch.randn(2, 9, 64, 64)), torch.zeros(2))
