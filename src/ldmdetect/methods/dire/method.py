"""DIRE (Wang et al., ICCV 2023): a ResNet-50 on the diffusion reconstruction error map.

Path of one image:
1. transform (CPU): the image resized so its short side is ``dire.image_size`` (256), as the
   official code does, then its center square, as ``"image"`` (``fit_short_side=False``: the
   square cut at native resolution instead, small images upscaled first); views of
   ``input_size`` (224) at offsets into it (the center for 1 try, seeded random for N tries,
   one random flipped-or-not view in training: the paper's RandomCrop + flip / CenterCrop);
2. feature step (device): DDIM inversion and reconstruction through the generator
   (``dire.features``: a pixel-space ``UNet2DModel`` as in the paper, or an LDM with the empty
   prompt), ``|x - x'|``, cached by image id;
3. model: a timm ``resnet50`` with one logit on the views of the DIRE map, normalised like
   ImageNet images (the paper's ``aug_norm``).

**The map is stored losslessly, as uint8**: ``round(255 |x - x'|)``, the same fixed scale for
every image, in a safetensors shard (3 x 256 x 256 bytes, 197 kB per image). The paper's code
writes each map as an image under its input's file name (``cv2.imwrite``), so JPEG inputs got
JPEG-compressed DIRE maps and PNG inputs lossless ones, a format difference its classifier
could learn instead of the reconstruction error. Here every map is the exact tensor, whatever
the input's format. uint8 rather than float16: it is the paper's own 8-bit precision
(the classifier sees what the paper's saw, minus the codec), half the bytes, and exact in
every dtype, so a cache round trip is bit-exact.

The pixel-space and latent-space generators are told apart from the UNet's config
(``feature.space`` "auto"); the resolved space and only the components it needs are recorded
in the detector's config when the feature step is first built.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ldmdetect.config import DetectorConfig
from ldmdetect.features.inversion import InversionTransform
from ldmdetect.generative.components import SDComponents
from ldmdetect.generative.families import denoiser_name
from ldmdetect.methods.batch import view_sampling, view_windows
from ldmdetect.methods.defaults import MethodDefaults
from ldmdetect.methods.dire.features import (
    LATENT_COMPONENTS,
    DireConfig,
    dire_maps,
    generator_space,
    load_dire_components,
    quantize_dire,
    space_components,
    space_sources,
)
from ldmdetect.methods.dire.settings import TINY, DireSettings
from ldmdetect.methods.registry import (
    Batch,
    GeneratorFeatureStep,
    Method,
    normalize,
    register_method,
)
from ldmdetect.models.classifier import BackboneClassifier

__all__ = ["Dire", "DireFeature"]


class DireFeature(GeneratorFeatureStep[DireConfig]):
    """The uint8 DIRE map (3, S, S) of each image; the generator loads on the first image
    missing from the cache, so training from a complete cache never loads it."""

    keys = ("dire",)

    def __init__(
        self,
        components: dict[str, dict],
        config: DireConfig,
        *,
        space: str,
        device: str | torch.device,
    ) -> None:
        super().__init__(components, config, device=device)
        self.space = space

    def load_components(self) -> SDComponents:
        return load_dire_components(self.sources, device=self.device)

    def settings(self) -> dict[str, Any]:
        return {
            "feature": "dire",
            "dire": self.config.to_dict(),
            "space": self.space,
            "quantization": "uint8 round(255 |x - x'|)",
            "components": self.sources,
        }

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"dire": quantize_dire(dire_maps(batch["image"], self.components, self.config))}


@register_method
class Dire(Method):
    name = "dire"
    summary = "DIRE: ResNet-50 on |x - DDIM reconstruction| through a diffusion model, ICCV 2023"
    # An LDM's; a pixel-space UNet2DModel needs only the unet and scheduler.
    components = LATENT_COMPONENTS

    tiny_settings = TINY

    Settings = DireSettings

    # The official training config (utils/config.py, utils/trainer.py): Adam (0.9, 0.999)
    # at 1e-4, no weight decay, no clipping, BCE on one logit, ImageNet pretrained ResNet-50
    # (--pretrained), batch 64 (--batch-size 64); its lr/10 on a validation plateau (early
    # stop) is not reproduced.
    default_cfg = MethodDefaults(
        backbone="resnet50",
        input_size=224,
        optimizer="adam",
        lr=1e-4,
        weight_decay=0.0,
        grad_clip=0.0,
    )

    def required_components(self, feature: dict[str, Any]) -> tuple[str, ...]:
        space = DireSettings.from_feature(feature, method=self.name).space
        return self.components if space == "auto" else space_components(space)

    def resolve(
        self, config: DetectorConfig, settings: DireSettings, *, pretrained: bool | str
    ) -> dict[str, Any]:
        """The generator's space, from its UNet's config, and only the components that space
        needs: the saved detector names exactly what it runs."""
        if settings.space != "auto" or not config.components:
            return {}
        space = generator_space(config.components)
        return {
            "feature": replace(settings, space=space).to_feature(),
            "components": space_sources(config.components, space),
        }

    def build_model(self, config: DetectorConfig, *, pretrained: bool | str = False) -> nn.Module:
        return BackboneClassifier(
            config.backbone, input_size=config.input_size, pretrained=pretrained
        )

    def dire_config(self, config: DetectorConfig) -> DireConfig:
        return self.settings(config).dire

    def transform(
        self, config: DetectorConfig, *, tries: int = 1, train: bool = False, augment: Any = None
    ):
        dire = self.dire_config(config)
        # Views come from the map, so they can be no larger than it.
        view = min(config.input_size, dire.image_size)
        # The DIRE map has the square's size, so a view's offset is also its map's.
        return InversionTransform(
            dire.image_size,
            dire.image_size,
            view,
            fit_short_side=dire.fit_short_side,
            **view_sampling(config, tries, train),
        )

    def feature_step(
        self, config: DetectorConfig, sources: dict[str, dict], device: str | torch.device
    ) -> DireFeature:
        if not sources or not ({"unet", "transformer"} & set(sources)):
            raise ValueError("dire needs a diffusion model's components (--pipeline ID_OR_DIR)")
        space = self.settings(config).space
        if space == "auto":  # a config made elsewhere: resolved here, recorded nowhere
            space = generator_space(sources)
        needed = [
            {"unet": denoiser_name(sources) or "unet"}.get(n, n) for n in space_components(space)
        ]
        missing = [n for n in needed if n not in sources]
        if missing:
            raise ValueError(f"dire ({space} space) needs the {', '.join(missing)} components")
        return DireFeature(
            space_sources(sources, space), self.dire_config(config), space=space, device=device
        )

    def logits(self, model: nn.Module, batch: Batch, config: DetectorConfig) -> torch.Tensor:
        crops = batch["crops"]
        b, t, _, side, _ = crops.shape
        dtype = next(model.parameters()).dtype
        maps = view_windows(batch["dire"], batch, side).to(crops.device)
        return model(normalize(maps, config, dtype)).view(b, t)
