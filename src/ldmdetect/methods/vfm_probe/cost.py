"""Per-image cost of ``vfm-probe`` (``benchmarks/feature_cost.py`` reads it)."""

from __future__ import annotations

import torch
from torch import nn

from ldmdetect.methods import cost


class VFMProbe(nn.Module):
    """The frozen foundation model's pooled embedding and the linear probe on it."""

    def __init__(self, name: str = "vit_large_patch14_dinov2", size: int = 224) -> None:
        super().__init__()
        import timm

        from ldmdetect.methods.vfm_probe.model import LinearProbe

        self.body = timm.create_model(name, pretrained=False, num_classes=0, img_size=size)
        self.probe = LinearProbe(self.body.num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.probe(self.body(images))


def vfm_pipeline(size: int) -> cost.Pipeline:
    model = cost.Model("dinov2_vit_l14_probe", VFMProbe, generator=False, convolutional=False)
    return cost.Pipeline(
        (model,),
        (cost.Stage("embedding_and_probe", model.name, cost.images(224), cost.call),),
        "every image is resized to 224 (short side) and center-cropped: the cost does not "
        "depend on the working size",
    )


def cost_specs() -> tuple[cost.CostSpec, ...]:
    """The method's cost specs: the default configuration first."""
    return (
        cost.CostSpec(
            "vfm-probe",
            "vfm-probe",
            "DINOv2 ViT-L/14 embedding at 224 + linear probe",
            "none: images are resized to 224",
            224,
            vfm_pipeline,
        ),
    )
