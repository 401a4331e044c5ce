"""AEROBLADE (Ricker et al., CVPR 2024): training-free detection by autoencoder reconstruction.

Path of one image:
1. transform (CPU): one ``input_size`` view (default 512, the paper's image size) at native
   resolution, its offset a multiple of the autoencoders' latent cell (``grid``, 8), so the
   view keeps a generated image's alignment with the decoder's grid;
2. feature step (device): the view through every autoencoder in the list (SD1, SD2 and
   Kandinsky 2.1's MoVQ by default), stored as 8-bit images like the official code's PNGs
   (``aeroblade.features``), cached by image id;
3. model: LPIPS (VGG16, the second layer by default; ``models.lpips``) between the view and
   each reconstruction, averaged over the layer's grid. The distance to the closest
   autoencoder is the evidence: a generated image is reconstructed well by its own.

Score = minus that distance, so higher means "more likely generated", as for every method; it
is not a probability (``probabilistic = False``), so only the FPR-calibrated thresholds exist.
Nothing is trained: ``ldmdetect train --method aeroblade --real DIR`` calibrates them on real
images. The LPIPS network (about 1 MB for layer 2) is the detector's ``model.safetensors``,
so a detector scores the same wherever it is loaded.

Per image, ``Detector.explain`` (this method's :meth:`Aeroblade.explain` hook) gives the
distance to every autoencoder, the closest one (attribution: which generator family
reconstructs it best), the LPIPS map of that autoencoder and the evidence map made from it
(where the image is reconstructed well), which ``Detector.evidence_map`` places over the image.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ldmdetect.config import IMAGENET_MEAN, IMAGENET_STD, DetectorConfig
from ldmdetect.generative.components import vae_scale_factor
from ldmdetect.generative.loading import resolve_device
from ldmdetect.io.crops import ensure_min_size
from ldmdetect.io.images import pil_to_uint8
from ldmdetect.methods.aeroblade.features import (
    autoencoder_name,
    autoencoder_source,
    load_autoencoders,
    reconstructions,
)
from ldmdetect.methods.aeroblade.settings import TINY, AerobladeConfig, AerobladeSettings
from ldmdetect.methods.defaults import MethodDefaults
from ldmdetect.methods.registry import (
    Batch,
    Explanation,
    FeatureStep,
    Method,
    Sample,
    register_method,
)
from ldmdetect.models.lpips import LPIPSMap, lpips_distance, lpips_map

__all__ = [
    "Aeroblade",
    "AerobladeConfig",
    "AerobladeExplanation",
    "AerobladeFeature",
    "AerobladeTransform",
    "explain",
    "largest_factor",
    "resolve_autoencoders",
]


@dataclass(frozen=True)
class AerobladeTransform:
    """Image -> one uint8 view (1, 3, S, S) at a grid-aligned offset near the center, and its
    box (left, top, right, bottom). Deterministic: N tries give the same view, since the
    score is not learnt and so has nothing to average over augmentations."""

    size: int
    grid: int = 8

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> Sample:
        image = ensure_min_size(image, self.size)
        left = (image.width - self.size) // 2 // self.grid * self.grid
        top = (image.height - self.size) // 2 // self.grid * self.grid
        box = (left, top, left + self.size, top + self.size)
        return {"crops": pil_to_uint8(image.crop(box))[None], "box": torch.tensor(box)}


class AerobladeFeature(FeatureStep):
    """Every autoencoder's reconstruction of the view: uint8 (K, 3, S, S) per image. The
    autoencoders load on the first miss, so a complete feature cache never loads them."""

    keys = ("reconstructions",)

    def __init__(
        self,
        sources: list[dict[str, Any]],
        config: AerobladeConfig,
        *,
        device: str | torch.device,
        size: int,
    ) -> None:
        self.sources, self.config, self.size = sources, config, size
        self.device = resolve_device(device)
        self._autoencoders = None

    def settings(self) -> dict[str, Any]:
        return {
            "feature": "aeroblade-reconstructions",
            "autoencoders": self.sources,
            "seed": self.config.seed,
            "grid": self.config.grid,
            "input_size": self.size,
        }

    @property
    def autoencoders(self):
        if self._autoencoders is None:
            self._autoencoders = load_autoencoders(self.sources, device=self.device)
        return self._autoencoders

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        views = batch["crops"][:, 0]
        return {
            "reconstructions": reconstructions(
                self.autoencoders, views, batch["id"], seed=self.config.seed
            )
        }


def resolve_autoencoders(entries) -> list[dict[str, Any]]:
    """The autoencoder list as exact source dicts (what a detector config records)."""
    if not entries:
        raise ValueError("aeroblade needs at least one autoencoder (aeroblade.autoencoders)")
    return [autoencoder_source(entry).to_dict() for entry in entries]


def largest_factor(sources: Sequence[Mapping[str, Any]]) -> int:
    """The largest downsampling factor of the autoencoders, read from their configs alone
    (no weights loaded): a view's offsets must be multiples of every latent cell."""
    return max(vae_scale_factor(source) for source in sources)


@register_method
class Aeroblade(Method):
    name = "aeroblade"
    summary = "AEROBLADE: LPIPS to the closest LDM-autoencoder reconstruction, training-free"
    trains = False
    probabilistic = False

    tiny_settings = TINY

    Settings = AerobladeSettings

    # The LPIPS trunk's ImageNet weights, where reachable.
    default_cfg = MethodDefaults(backbone="lpips-vgg16", input_size=512, pretrained=True)

    def resolve(
        self, config: DetectorConfig, settings: AerobladeSettings, *, pretrained: bool | str
    ) -> dict[str, Any]:
        """The autoencoder list as exact source dicts: what the detector is calibrated with."""
        exact = resolve_autoencoders(settings.aeroblade.autoencoders)
        aeroblade = replace(settings.aeroblade, autoencoders=tuple(exact))
        return {"feature": replace(settings, aeroblade=aeroblade).to_feature()}

    def normalization(self, backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return IMAGENET_MEAN, IMAGENET_STD  # recorded only: LPIPS scales its own input

    def build_model(self, config: DetectorConfig, *, pretrained: bool | str = False) -> nn.Module:
        return LPIPSMap(AerobladeConfig.from_config(config).layer, pretrained=bool(pretrained))

    def transform(
        self, config: DetectorConfig, *, tries: int = 1, train: bool = False, augment: Any = None
    ):
        grid = AerobladeConfig.from_config(config).grid
        if config.input_size % grid:
            raise ValueError(
                f"aeroblade's input size {config.input_size} must be a multiple of its grid "
                f"({grid}), so that every autoencoder sees whole latent cells"
            )
        return AerobladeTransform(config.input_size, grid)

    def judge_sources(
        self, sources: Sequence[Mapping[str, Any]], input_size: int
    ) -> dict[str, Any]:
        """Untrained over ``sources``, in their order: the grid is their largest latent cell,
        and the view the largest multiple of it within ``input_size`` (one cell at least)."""
        grid = largest_factor(sources)
        return {
            "input_size": max(grid, input_size // grid * grid),
            "feature": {"aeroblade": {"autoencoders": [dict(s) for s in sources], "grid": grid}},
        }

    def needs_content_id(self, config: DetectorConfig, *, cached: bool) -> bool:
        # The autoencoders' sampling noise is seeded by the image's id, cache or not.
        return True

    def feature_step(
        self, config: DetectorConfig, sources: dict[str, dict], device: str | torch.device
    ) -> AerobladeFeature:
        settings = AerobladeConfig.from_config(config)
        # Components given (e.g. local copies) replace the recorded list, in order.
        autoencoders = resolve_autoencoders(
            list(sources.values()) if sources else settings.autoencoders
        )
        return AerobladeFeature(autoencoders, settings, device=device, size=config.input_size)

    def distances(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """LPIPS distance of each image's view to each reconstruction: (B, K)."""
        views = batch["crops"][:, 0].float() / 255
        recon = batch["reconstructions"].float() / 255
        return lpips_distance(model(views, recon))

    def logits(self, model: nn.Module, batch: Batch, config: DetectorConfig) -> torch.Tensor:
        return -self.distances(model, batch).min(dim=1).values[:, None]

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float()  # the score itself: -distance, not a probability

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("aeroblade's score is a distance: it has no probabilities")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.full((), float("nan"))  # nothing is trained

    def maps(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(distances (B, K), LPIPS map of the closest autoencoder at the view's size
        (B, S, S))."""
        views = batch["crops"][:, 0].float() / 255
        recon = batch["reconstructions"].float() / 255
        layer_maps = model(views, recon)
        distances = lpips_distance(layer_maps)
        best = distances.argmin(dim=1)
        rows = torch.arange(len(best), device=best.device)
        chosen = [m[rows, best] for m in layer_maps]
        return distances, lpips_map(chosen, tuple(views.shape[-2:]))

    def explain(
        self, model: nn.Module, batch: Batch, config: DetectorConfig, features: FeatureStep | None
    ) -> list[AerobladeExplanation]:
        """Per image: the score, the distance to every autoencoder (named by folder or repo),
        the closest one, its LPIPS map over the view and the evidence made from that map."""
        distances, distance_maps = self.maps(model, batch)
        evidence = _evidence(distance_maps, config)
        sources = features.sources if features is not None else []  # its AerobladeFeature
        names = explanation_names(sources) or [str(i) for i in range(distances.shape[1])]
        out = []
        for i in range(len(distances)):
            row = distances[i].float().cpu()
            best = int(row.argmin())
            out.append(
                AerobladeExplanation(
                    evidence=evidence[i].float().cpu().numpy(),
                    box=tuple(int(v) for v in batch["box"][i]),
                    score=-float(row[best]),
                    distances={n: float(d) for n, d in zip(names, row, strict=True)},
                    autoencoder=names[best],
                    distance_map=distance_maps[i].float().cpu().numpy(),
                )
            )
        return out


def explanation_names(sources: list[dict[str, Any]]) -> list[str]:
    """The names :meth:`Aeroblade.explain` gives the autoencoders in its ``distances``, in
    list order: folder or repo (plus subfolder), numbered ``i:name`` when two share one, so
    a caller can map them back to what it passed."""
    names = [autoencoder_name(s) for s in sources]
    if len(set(names)) < len(names):  # two folders of the same name: number them
        names = [f"{i}:{name}" for i, name in enumerate(names)]
    return names


def _evidence(distance_map: torch.Tensor, config: DetectorConfig) -> torch.Tensor:
    """1 where the closest autoencoder reconstructs the image perfectly, 0.5 at the mean
    distance of the loosest calibrated threshold, 0 at twice it or more."""
    reference = _reference_distance(config)
    if reference is None:  # uncalibrated: relative to the image's own largest distance
        peak = distance_map.flatten(1).amax(dim=1).clamp_min(1e-12)
        return 1 - distance_map / peak[:, None, None]
    return (1 - distance_map / (2 * reference)).clamp(0, 1)


def _reference_distance(config: DetectorConfig) -> float | None:
    fprs = {
        float(key.split("_", 1)[1]): value
        for key, value in config.thresholds.items()
        if key.startswith("fpr_")
    }
    if not fprs:
        return None
    return max(-fprs[max(fprs)], 1e-12)  # thresholds are on -distance


@dataclass
class AerobladeExplanation(Explanation):
    """AEROBLADE's account of one image: beside the evidence map over the view (``box``, in
    the image upscaled if it was smaller than the view), the score, the distance to each
    autoencoder and the closest one (attribution to a generator family)."""

    score: float  # -min distance
    distances: dict[str, float]  # per autoencoder (named by folder or repo)
    autoencoder: str  # the closest one: attribution to a generator family
    distance_map: np.ndarray  # (S, S) LPIPS map of the closest autoencoder over the view


def explain(detector, images) -> list[AerobladeExplanation] | None:
    """Deprecated: ``detector.explain(images)``, the hook every method has."""
    warnings.warn(
        "ldmdetect.methods.aeroblade.explain(detector, images) is deprecated: use "
        "detector.explain(images)",
        DeprecationWarning,
        stacklevel=2,
    )
    return detector.explain(images)
