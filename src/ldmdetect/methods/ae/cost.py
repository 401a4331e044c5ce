"""Per-image cost of ``ae`` (``benchmarks/feature_cost.py`` reads it)."""

from __future__ import annotations

from collections.abc import Callable

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
    """The method's cost specs: the default configuration first."""
    return (
        cost.CostSpec(
            "ae",
            "ae",
            "tf_efficientnetv2_b0 classifier on the raw crop (the method's default backbone)",
            "crop side (input_size)",
            256,
            ae_pipeline("tf_efficientnetv2_b0"),
        ),
        cost.CostSpec(
            "ae:convnext_large",
            "ae",
            "ConvNeXt-L classifier on the raw crop (the README's real-data backbone)",
            "crop side (input_size)",
            256,
            ae_pipeline("convnext_large"),
        ),
    )
