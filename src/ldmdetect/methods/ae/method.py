"""AE-reconstruction detector ("Detecting AutoEncoder is Enough", arXiv 2411.06441).

Training sees real crops vs. the same crops passed through an LDM autoencoder; at test time
only the classifier runs, on raw crops: no autoencoder, no generator. Its evidence map
(:meth:`AEReconstruction.explain`) is gradient x input over that classifier, tiled over the
image (``evidence``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from ldmdetect.config import DetectorConfig
from ldmdetect.io.augment import NO_AUGMENTATION, AugmentConfig, augmented_crop
from ldmdetect.io.crops import crop, ensure_min_size, n_try_boxes
from ldmdetect.io.images import pil_to_uint8
from ldmdetect.methods.ae.evidence import WholeImage, explain_batch
from ldmdetect.methods.ae.settings import TINY, AESettings
from ldmdetect.methods.defaults import MethodDefaults
from ldmdetect.methods.registry import (
    Batch,
    Explanation,
    FeatureStep,
    Method,
    Sample,
    normalize,
    register_method,
)
from ldmdetect.models.classifier import BackboneClassifier

__all__ = ["AEReconstruction", "CropTransform", "classify_crops"]


@dataclass(frozen=True)
class CropTransform:
    """Image -> uint8 crops (T, 3, S, S) at native resolution.

    Inference: 1 try = the center crop, N tries = N seeded random crops. Training: one crop
    with the augmentations drawn from the rng (replayed alike for both members of a pair);
    none but the random crop without ``augment``.
    """

    size: int
    tries: int = 1
    try_seed: int = 0
    augment: AugmentConfig | None = None
    train: bool = False

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> Sample:
        if rng is not None and self.train:
            view = augmented_crop(image, self.size, self.augment or NO_AUGMENTATION, rng)
            return {"crops": pil_to_uint8(view)[None]}
        image = ensure_min_size(image, self.size)
        boxes = n_try_boxes(image.width, image.height, self.size, self.tries, seed=self.try_seed)
        return {"crops": torch.stack([pil_to_uint8(crop(image, box)) for box in boxes])}


def classify_crops(model: nn.Module, crops: torch.Tensor, config: DetectorConfig) -> torch.Tensor:
    """uint8 crops (B, T, 3, S, S) -> model outputs (B, T, ...): every view in one pass."""
    dtype = next(model.parameters()).dtype
    b, t = crops.shape[:2]
    out = model(normalize(crops.flatten(0, 1), config, dtype))
    return out.view(b, t, *out.shape[1:])


@register_method
class AEReconstruction(Method):
    name = "ae"
    pixel_augmentation = True  # both members of a pair, replayed from one seed
    summary = "classifier trained on real images vs. their LDM-autoencoder reconstructions"

    tiny_settings = TINY
    Settings = AESettings

    # Reconstructions through several autoencoders: one class per family beside "real".
    attributes_families = True

    default_cfg = MethodDefaults(backbone="tf_efficientnetv2_b0", input_size=256)

    def build_model(self, config: DetectorConfig, *, pretrained: bool | str = False) -> nn.Module:
        classes = self.classes_for(config)
        return BackboneClassifier(
            config.backbone,
            input_size=config.input_size,
            pretrained=pretrained,
            num_classes=len(classes) if len(classes) > 2 else 1,
        )

    def transform(
        self,
        config: DetectorConfig,
        *,
        tries: int = 1,
        train: bool = False,
        augment: AugmentConfig | None = None,
    ) -> CropTransform:
        return CropTransform(config.input_size, tries, config.try_seed, augment, train)

    def logits(self, model: nn.Module, batch: Batch, config: DetectorConfig) -> torch.Tensor:
        return classify_crops(model, batch["crops"], config).float()

    def explain_transform(self, config: DetectorConfig) -> WholeImage:
        return WholeImage(config.input_size)

    def explain(
        self, model: nn.Module, batch: Batch, config: DetectorConfig, features: FeatureStep | None
    ) -> list[Explanation]:
        """Per image, where the classifier reads the autoencoder's trace: each region's
        first-order part in its "not real" logit, tiled over the whole image (why this, and
        the scale: :mod:`ldmdetect.methods.ae.evidence`). No autoencoder runs, as in
        scanning."""
        return explain_batch(model, batch, config, classify_crops)
