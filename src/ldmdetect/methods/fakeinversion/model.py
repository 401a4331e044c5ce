"""FakeInversion's classifier: one CNN over the image stacked with its inversion maps.

The input is ``concat(x, D(z_T), D(z_0'))`` along channels (9 channels), optionally with the
residual ``|x - D(z_0')|`` (12 channels): the network compares the three pixel-aligned images
itself from the first layer on. The paper uses a ResNet-50 with a widened stem; any timm CNN
works, built with ``in_chans`` so that timm adapts 3-channel pretrained weights to the wider
stem (each input group gets the RGB filters, rescaled by 3 / in_chans).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ldmdetect.models.classifier import fresh_head_model

INPUTS = ("image", "noise", "reconstruction")  # the three RGB groups, in channel order


def input_channels(residual: bool) -> int:
    """9 channels (x, D(z_T), D(z_0')), or 12 with the residual |x - D(z_0')|."""
    return 3 * (len(INPUTS) + int(residual))


class FakeInversionNet(nn.Module):
    """A timm backbone with a (9 or 12)-channel stem and one logit (P(generated) = sigmoid).

    ``weights_source`` records where the backbone's initial weights came from (see
    :func:`~ldmdetect.models.classifier.create_timm_model`); the head is always fresh.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        *,
        residual: bool = False,
        pretrained: bool | str | Path = False,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.in_chans = input_channels(residual)
        # A zeroed head: a saturated start leaves every score at 0 or 1 (zero_head).
        self.net, self.weights_source = fresh_head_model(
            backbone, pretrained, num_classes=1, in_chans=self.in_chans, drop_rate=drop_rate
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Normalised stacked inputs (B, in_chans, H, W) -> logits (B,)."""
        if inputs.shape[1] != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input channels, got {inputs.shape[1]}")
        return self.net(inputs).squeeze(-1)
