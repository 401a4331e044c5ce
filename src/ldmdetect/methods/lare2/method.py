"""LaRE^2 (Luo et al., CVPR 2024): latent reconstruction error + error-guided refinement.

Path of one image:
1. transform (CPU): the whole image resized to ``lare.image_size`` (256, bicubic, no crop)
   for LaRE, and ``input_size`` (224) crops of that same resized image for the image tower;
2. feature step (device): one UNet noise prediction on the noisy latent at t=200, ensemble of
   4 -> the LaRE map (``lare2.features``), cached by image id;
3. model (``lare2.model``): the image tower's features refined by the map, two classes.

Alignment of crop and map: crop offsets are multiples of the VAE's downsampling factor f, so
the crop's map is exactly the slice ``[y/f : (y+S)/f, x/f : (x+S)/f]`` of the whole-image map
(and is flipped with the crop in training). The map is always computed on the un-augmented
resized image, which is what lets it be cached once and reused every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ldmdetect.config import DetectorConfig
from ldmdetect.generative.families import method_family
from ldmdetect.io.crops import AlignedViewSampling
from ldmdetect.methods.batch import view_sampling, view_windows
from ldmdetect.methods.defaults import MethodDefaults
from ldmdetect.methods.lare2.features import LareConfig, image_seed, lare_maps, resize_for_lare
from ldmdetect.methods.lare2.model import EGRE, tower_normalization
from ldmdetect.methods.lare2.settings import DEFAULT_PROMPT_TEMPLATE, TINY, Lare2Settings
from ldmdetect.methods.registry import (
    Batch,
    Explanation,
    FeatureStep,
    GeneratorFeatureStep,
    Method,
    Sample,
    normalize,
    register_method,
)

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "LaRE2",
    "LareFeature",
    "LareTransform",
    "latent_channels",
    "latent_factor",
]


@dataclass(frozen=True)
class LareTransform(AlignedViewSampling):
    """Image -> whole resized image (for LaRE) + aligned crops of it (for the tower)."""

    lare_size: int
    crop: int
    factor: int

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> Sample:
        whole = resize_for_lare(image, self.lare_size)
        return {"image": whole, **self.views(whole, self.crop, rng, step=self.factor)}


class LareFeature(GeneratorFeatureStep[LareConfig]):
    """The LaRE map of each image; generator components are loaded on the first miss only,
    so training from a complete feature cache never loads the UNet."""

    keys = ("lare",)

    def settings(self) -> dict[str, Any]:
        return {
            "feature": "lare",
            "lare": self.config.to_dict(),
            "components": self.sources,
            "prompt_template": self.prompt_template,
        }

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        seeds = [image_seed(key, self.config.seed) for key in batch["id"]]
        maps = lare_maps(batch["image"], batch["prompt"], seeds, self.components, self.config)
        return {"lare": maps.float().cpu()}


def latent_factor(sources: dict[str, dict]) -> int:
    """The VAE's downsampling factor, read from its config without loading weights."""
    from ldmdetect.generative.components import vae_scale_factor

    return vae_scale_factor(sources["vae"])


def latent_channels(config: DetectorConfig) -> int:
    """Channels of the LaRE map: recorded in the config, else the components' VAE's (4 for
    SD/SDXL, 16 for SD3/FLUX; read from its config), else SD's 4.

    A detector saved before the channels were recorded can only be an SD one (4): if its
    pipeline is out of reach when it is loaded, that is what it gets, so loading a detector
    never needs the generator (its features load lazily, on the first image). Nothing is
    written back: a config is made once (``make_config`` records the channels).
    """
    settings = Lare2Settings.from_feature(config.feature, method="lare2")
    if settings.latent_channels is not None:
        return settings.latent_channels
    if not config.components or "vae" not in config.components:
        return 4
    from ldmdetect.generative.components import vae_latent_channels
    from ldmdetect.io.hub import SourceUnavailable

    try:
        return vae_latent_channels(config.components["vae"])
    except SourceUnavailable:
        return 4


def _factor(settings: Lare2Settings) -> int:
    return settings.latent_factor or 8


@register_method
class LaRE2(Method):
    name = "lare2"
    summary = (
        "LaRE^2: latent reconstruction error of the generator's denoiser (UNet or flow "
        "transformer) guiding a CLIP RN50 (EGRE), CVPR 2024"
    )
    components = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")

    tiny_settings = TINY

    Settings = Lare2Settings

    # The paper's recipe: Adam 1e-4, no weight decay, gradients clipped at 5.
    default_cfg = MethodDefaults(
        backbone="openclip:RN50",
        input_size=224,
        optimizer="adam",
        lr=1e-4,
        weight_decay=0.0,
        grad_clip=5.0,
    )

    def normalization(self, backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tower_normalization(backbone)

    def required_components(self, feature: dict[str, Any]) -> tuple[str, ...]:
        unguided = Lare2Settings.from_feature(feature, method=self.name).unguided
        return () if unguided else self.components

    def resolve(
        self, config: DetectorConfig, settings: Lare2Settings, *, pretrained: bool | str
    ) -> dict[str, Any]:
        """The VAE's downsampling factor and latent channels, read from its config (no
        weights loaded) and recorded; unguided detectors have no VAE and record neither."""
        if settings.unguided or "vae" not in config.components:
            return {}
        from ldmdetect.generative.components import vae_latent_channels

        resolved = replace(
            settings,
            latent_factor=settings.latent_factor or latent_factor(config.components),
            latent_channels=settings.latent_channels
            or vae_latent_channels(config.components["vae"]),
        )
        return {"feature": resolved.to_feature()}

    def logits_per_view(self, config: DetectorConfig) -> int:
        return 2  # EGRE's head: a softmax over (real, generated), as the official code's

    def build_model(self, config: DetectorConfig, *, pretrained: bool | str = False) -> nn.Module:
        return EGRE(
            config.backbone,
            pretrained=pretrained,
            lare_channels=latent_channels(config),
            input_size=config.input_size,
        )

    def transform(
        self, config: DetectorConfig, *, tries: int = 1, train: bool = False, augment: Any = None
    ):
        settings = self.settings(config)
        lare, factor = settings.lare, _factor(settings)
        # Crops come from the resized image, so they can be no larger than it (extracting
        # features at a small LaRE size needs no crop setting of its own).
        crop = min(config.input_size, lare.image_size)
        return LareTransform(lare.image_size, crop, factor, **view_sampling(config, tries, train))

    def needs_content_id(self, config: DetectorConfig, *, cached: bool) -> bool:
        # The UNet's noise is seeded by the image's id, cache or not; unguided has no step.
        return not self.settings(config).unguided

    def feature_step(
        self, config: DetectorConfig, sources: dict[str, dict], device: str | torch.device
    ) -> LareFeature | None:
        settings = self.settings(config)
        if settings.unguided:
            return None
        sources = self.generator_sources(sources)
        method_family(sources, self.name)  # a generator no family describes is refused here
        return LareFeature(
            sources, settings.lare, device=device, prompt_template=settings.prompt_template
        )

    def logits(self, model: nn.Module, batch: Batch, config: DetectorConfig) -> torch.Tensor:
        crops = batch["crops"]
        b, t = crops.shape[:2]
        dtype = next(model.parameters()).dtype
        images = normalize(crops.flatten(0, 1), config, dtype)
        if "lare" not in batch:  # guidance "none": the ablation without LaRE
            channels = latent_channels(config)
            zeros = images.new_zeros(b * t, channels, 1, 1)
            return model(images, zeros).view(b, t, -1)
        lare = batch["lare"]
        factor = _factor(self.settings(config))
        maps = view_windows(lare, batch, crops.shape[-1] // factor, factor=factor)
        out = model(images, maps.to(dtype))
        return out.view(b, t, -1)

    def explain(
        self, model: nn.Module, batch: Batch, config: DetectorConfig, features: FeatureStep | None
    ) -> list[Explanation] | None:
        """The LaRE map over the whole resized image, averaged over latent channels and
        scaled within each image so that 1 is its lowest error (the paper's premise: the
        generator reconstructs its own images' latents better). Relative, not calibrated.
        None for guidance "none" (the ablation without LaRE has no map)."""
        if "lare" not in batch:
            return None
        error = batch["lare"].float().mean(dim=1)
        low = error.amin(dim=(1, 2), keepdim=True)
        high = error.amax(dim=(1, 2), keepdim=True)
        evidence = 1 - (error - low) / (high - low).clamp_min(1e-12)
        return [Explanation(evidence=e.cpu().numpy(), box=None) for e in evidence]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.float(), labels.long())
