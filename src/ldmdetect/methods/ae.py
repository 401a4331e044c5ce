"""AE-reconstruction detector ("Detecting AutoEncoder is Enough", arXiv 2411.06441).

Training sees real crops vs. the same crops passed through an LDM autoencoder; at test time
only the classifier runs, on raw crops: no autoencoder, no generator.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from ldmdetect.config import DetectorConfig
from ldmdetect.io.crops import crop, ensure_min_size, n_try_boxes
from ldmdetect.io.images import pil_to_uint8
from ldmdetect.methods.registry import Method, normalize, register_method
from ldmdetect.models.classifier import BackboneClassifier


@register_method
class AEReconstruction(Method):
    name = "ae"
    summary = "classifier trained on real images vs. their LDM-autoencoder reconstructions"

    def build_model(self, config: DetectorConfig, *, pretrained: bool | str = False) -> nn.Module:
        return BackboneClassifier(
            config.backbone, input_size=config.input_size, pretrained=pretrained
        )

    def prepare(self, image: Image.Image, config: DetectorConfig, tries: int) -> torch.Tensor:
        size = config.input_size
        image = ensure_min_size(image, size)
        boxes = n_try_boxes(image.width, image.height, size, tries, seed=config.try_seed)
        return torch.stack([pil_to_uint8(crop(image, box)) for box in boxes])

    def logits(self, model: nn.Module, batch: torch.Tensor, config: DetectorConfig) -> torch.Tensor:
        dtype = next(model.parameters()).dtype
        return model(normalize(batch, config, dtype)).float()
