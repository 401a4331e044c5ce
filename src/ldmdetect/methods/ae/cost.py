"""Per-image cost of ``ae`` (``benchmarks/feature_cost.py`` reads it)."""

from __future__ import annotations

from collections.abc import Callable

from ldmdetect.methods.cost import (
    CostSpec,
    Pipeline,
    Stage,
    _call,
    _classifier,
    _images,
)


def ae_pipeline(backbone: str) -> Callable[[int], Pipeline]:
    def pipeline(size: int) -> Pipeline:
        model = _classifier(backbone, size)
        return Pipeline(
            (model,),
            (Stage("classifier", model.name, _images(size), _call),),
            "1-try: the center crop only; no generator at test time",
        )

    return pipeline


def cost_specs() -> tuple[CostSpec, ...]:
    """The method's cost specs: the default configuration first."""
    return (
        CostSpec(
            "ae",
            "ae",
            "tf_efficientnetv2_b0 classifier on the raw crop (the method's default backbone)",
            "crop side (input_size)",
            256,
            ae_pipeline("tf_efficientnetv2_b0"),
        ),
        CostSpec(
            "ae:convnext_large",
            "ae",
            "ConvNeXt-L classifier on the raw crop (the README's real-data backbone)",
            "crop side (input_size)",
            256,
            ae_pipeline("convnext_large"),
        ),
    )
