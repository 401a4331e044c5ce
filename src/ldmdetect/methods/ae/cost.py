"""Per-image cost of ``ae`` (``benchmarks/feature_cost.py`` reads it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ldmdetect.methods import cost


def ae_pipeline(backbone: str) -> Callable[[int], cost.Pipeline]:
    def pipeline(size: int) -> cost.Pipeline:
        model = cost.classifier(backbone, size)
        return cost.Pipeline(
            (model,),
            (cost.Stage("classifier", model.name, cost.images(size), cost.call),),
            "1-try: the center crop only; no generator at test time",
        )

    return pipeline


def cost_specs() -> tuple[cost.CostSpec, ...]:
    """The default backbone first, then the README's real-data backbone on the same crop."""
    default = cost.CostSpec(
        "ae",
        "ae",
        "tf_efficientnetv2_b0 classifier on the raw crop (the method's default backbone)",
        "crop side (input_size)",
        256,
        ae_pipeline("tf_efficientnetv2_b0"),
    )
    convnext = replace(
        default,
        name="ae:convnext_large",
        what="ConvNeXt-L classifier on the raw crop (the README's real-data backbone)",
        pipeline=ae_pipeline("convnext_large"),
    )
    return (default, convnext)
