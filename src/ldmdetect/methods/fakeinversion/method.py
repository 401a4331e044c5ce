"""FakeInversion (Cazenavette et al., CVPR 2024): classify an image next to its DDIM inversion.

Path of one image:
1. transform (CPU): the ``inversion.image_size`` (512) center crop, small images upscaled
   first, as ``"image"``; that crop resized to ``map_size`` (224) and cut into views of
   ``input_size`` as ``"crops"``;
2. feature step (device): a caption (``captioner``: BLIP-2, the sidecar prompt or a fixed
   text), DDIM inversion of the crop with it to z_T and re-generation to z_0' through the
   generator (``features.inversion``), both decoded; the pair D(z_T), D(z_0') is resized to
   ``map_size`` like the image and cached by image id as uint8 (2 x 3 x 224 x 224 bytes,
   301 kB per image: the expensive part, computed once);
3. model (``fakeinversion.model``): a ResNet-50 with a 9-channel stem on
   ``concat(x, D(z_T), D(z_0'))`` (12 with ``residual``: ``|x - D(z_0')|``), one logit.

Views: with the paper's ``map_size == input_size == 224`` there is one view, the whole resized
crop. When ``map_size`` is larger, views are ``input_size`` crops of the three maps at the same
offset (random in training, the center for 1 try, seeded random for N tries), so the cached
maps stay pixel-aligned with the image; training also flips the three together. Pixel
augmentations (JPEG, blur) are not applied: they would change x but not its cached inversion.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ldmdetect.config import DetectorConfig
from ldmdetect.features.inversion import (
    InversionConfig,
    InversionTransform,
    invert_and_regenerate,
    resize_uint8,
)
from ldmdetect.generative.captioners import Captioner, parse_captioner
from ldmdetect.generative.families import method_family, refuse
from ldmdetect.methods.batch import view_sampling, view_windows
from ldmdetect.methods.defaults import MethodDefaults
from ldmdetect.methods.fakeinversion.model import FakeInversionNet
from ldmdetect.methods.fakeinversion.settings import (
    DEFAULT_CAPTIONER,
    DEFAULT_MAP_SIZE,
    TINY,
    FakeInversionSettings,
)
from ldmdetect.methods.registry import (
    Batch,
    GeneratorFeatureStep,
    Method,
    register_method,
)

__all__ = ["DEFAULT_CAPTIONER", "DEFAULT_MAP_SIZE", "FakeInversion", "InversionFeature"]


class InversionFeature(GeneratorFeatureStep[InversionConfig]):
    """D(z_T) and D(z_0') of each image at ``map_size``, uint8. Generator components and the
    captioner load on the first image missing from the cache, so training from a complete
    cache loads neither."""

    keys = ("noise", "reconstruction")

    def __init__(
        self,
        components: dict[str, dict],
        config: InversionConfig,
        captioner: Captioner,
        *,
        map_size: int,
        device: str | torch.device,
        prompt_template: str | None,
    ) -> None:
        super().__init__(components, config, device=device, prompt_template=prompt_template)
        self.captioner, self.map_size = captioner, map_size

    def settings(self) -> dict[str, Any]:
        return {
            "feature": "fakeinversion",
            "inversion": self.config.to_dict(),
            "captioner": self.captioner.spec,
            "map_size": self.map_size,
            "components": self.sources,
            "prompt_template": self.prompt_template,
        }

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch["image"]
        captions = self.captioner(images, batch["prompt"])
        noise, reconstruction = invert_and_regenerate(
            images, captions, self.components, self.config
        )
        return {
            "noise": resize_uint8(noise, self.map_size),
            "reconstruction": resize_uint8(reconstruction, self.map_size),
        }


def _normalized(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images / 255.0 - mean) / std


@register_method
class FakeInversion(Method):
    name = "fakeinversion"
    summary = "FakeInversion: image + decoded DDIM inversion and re-generation, CVPR 2024"
    components = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")

    tiny_settings = TINY

    Settings = FakeInversionSettings

    default_cfg = MethodDefaults(backbone="resnet50", input_size=224)

    def build_model(self, config: DetectorConfig, *, pretrained: bool | str = False) -> nn.Module:
        return FakeInversionNet(
            config.backbone, residual=self.settings(config).residual, pretrained=pretrained
        )

    def inversion_config(self, config: DetectorConfig) -> InversionConfig:
        return self.settings(config).inversion

    def map_size(self, config: DetectorConfig) -> int:
        return self.settings(config).map_size

    def transform(
        self, config: DetectorConfig, *, tries: int = 1, train: bool = False, augment: Any = None
    ):
        settings = self.settings(config)
        inversion, map_size = settings.inversion, settings.map_size
        # Views come from the map, so they can be no larger than it.
        view = min(config.input_size, map_size)
        sampling = view_sampling(config, tries, train)
        return InversionTransform(inversion.image_size, map_size, view, **sampling)

    def feature_step(
        self, config: DetectorConfig, sources: dict[str, dict], device: str | torch.device
    ) -> InversionFeature:
        sources = self.generator_sources(sources)
        settings = self.settings(config)
        inversion = settings.inversion
        family = method_family(sources, self.name)
        if family.name == "flux" and inversion.guidance != 1.0:
            # Refused here, before any image is read, rather than on the first batch.
            raise refuse(
                family,
                self.name,
                "FLUX.1 is guidance-distilled, so its inversion takes no classifier-free "
                f"guidance ({inversion.guidance}); set feature.inversion.guidance to 1",
            )
        return InversionFeature(
            sources,
            inversion,
            parse_captioner(settings.captioner, device=device),
            map_size=settings.map_size,
            device=device,
            prompt_template=settings.prompt_template,
        )

    def logits(self, model: nn.Module, batch: Batch, config: DetectorConfig) -> torch.Tensor:
        crops = batch["crops"]
        b, t, _, side, _ = crops.shape
        dtype = next(model.parameters()).dtype
        device = crops.device
        mean = torch.tensor(config.mean, device=device, dtype=dtype).view(1, 3, 1, 1)
        std = torch.tensor(config.std, device=device, dtype=dtype).view(1, 3, 1, 1)
        x = crops.flatten(0, 1).to(dtype)
        noise = view_windows(batch["noise"], batch, side).to(device=device, dtype=dtype)
        regenerated = view_windows(batch["reconstruction"], batch, side)
        regenerated = regenerated.to(device=device, dtype=dtype)
        groups = [
            _normalized(x, mean, std),
            _normalized(noise, mean, std),
            _normalized(regenerated, mean, std),
        ]
        if self.settings(config).residual:
            # A zero residual is the natural zero, so it is scaled but not shifted.
            groups.append((x - regenerated).abs() / 255.0 / std)
        out = model(torch.cat(groups, dim=1))
        return out.view(b, t)
