"""The truncated LPIPS network computes what the lpips package computes."""

import lpips
import pytest
import torch

from ldmdetect.models.lpips import LPIPSMap, lpips_distance, lpips_layers, lpips_map


def _reference_with_trunk_of(model: LPIPSMap) -> lpips.LPIPS:
    """The package's full LPIPS with ``model``'s (random) VGG trunk copied in."""
    reference = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    ours = dict(model.named_modules())
    for s in range(len(model.slices)):
        for name, child in getattr(reference.net, f"slice{s + 1}").named_children():
            child.load_state_dict(ours[f"slices.{s}.{name}"].state_dict())
    return reference


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
@pytest.mark.parametrize("layer", [0, 2])
def test_distance_matches_the_lpips_package(layer):
    model = LPIPSMap(layer, pretrained=False)
    reference = _reference_with_trunk_of(LPIPSMap(0, pretrained=False))
    a, b = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    total, per_layer = reference(a, b, retPerLayer=True, normalize=True)
    expected = total.flatten() if layer == 0 else per_layer[layer - 1].flatten()
    torch.testing.assert_close(lpips_distance(model(a, b)), expected.detach())


def test_candidates_are_compared_with_one_reference_pass():
    model = LPIPSMap(2, pretrained=False)
    a, b, c = (torch.rand(2, 3, 32, 32) for _ in range(3))
    both = lpips_distance(model(a, torch.stack([b, c], dim=1)))
    assert both.shape == (2, 2)
    torch.testing.assert_close(both[:, 0], lpips_distance(model(a, b)))
    torch.testing.assert_close(both[:, 1], lpips_distance(model(a, c)))
    assert lpips_distance(model(a, a)).abs().max() < 1e-6


def test_map_is_at_the_layer_resolution_and_upsamples_to_the_image():
    model = LPIPSMap(2, pretrained=False)
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    maps = model(a, b)
    assert maps[0].shape == (1, 16, 16)  # relu2_2 is after one pooling
    full = lpips_map(maps, (32, 32))
    assert full.shape == (1, 32, 32)
    torch.testing.assert_close(full.mean(), lpips_distance(maps)[0], rtol=0.05, atol=0)


def test_random_trunk_is_reproducible_and_only_the_read_layers_are_kept():
    one, two = LPIPSMap(2, pretrained=False), LPIPSMap(2, pretrained=False)
    for (k, v), (_, w) in zip(one.state_dict().items(), two.state_dict().items(), strict=True):
        assert torch.equal(v, w), k
    assert len(one.slices) == 2 and len(one.lins) == 1
    assert "random" in one.weights_source


def test_offline_says_the_trunk_is_random(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent")
    with pytest.warns(UserWarning, match="random VGG backbone"):
        model = LPIPSMap(2, pretrained=True)
    assert "random VGG16 trunk" in model.weights_source


def test_layer_numbers():
    assert lpips_layers(0) == [0, 1, 2, 3, 4] and lpips_layers(2) == [1]
    with pytest.raises(ValueError, match="layer"):
        lpips_layers(6)
