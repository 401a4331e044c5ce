"""A fresh detector config for a method: made once, from the method's typed settings.

Training, feature extraction and the Ray engine all start here, so a detector's config does
not depend on which of them built it or on whether its features were built first: whatever a
method derives from the generator's components (LaRE's latent grid and channels, DIRE's
pixel or latent space, AEROBLADE's exact autoencoder sources, the probe's reachable
foundation model) is resolved here, once, and recorded (:meth:`Method.resolve`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ldmdetect.config import DetectorConfig
from ldmdetect.generative.components import pipeline_sources
from ldmdetect.methods.registry import Method, get


def make_config(
    method: str | Method,
    *,
    backbone: str | None = None,
    input_size: int | None = None,
    feature: dict[str, Any] | None = None,
    pipeline: str | os.PathLike | None = None,
    revision: str | None = None,
    pretrained: bool | str | None = None,
) -> DetectorConfig:
    """A fresh detector config: the method's defaults, overridden by the arguments.

    ``feature`` holds nested overrides of the method's settings (``{"lare": {"timestep":
    100}}`` keeps LaRE's other settings); an unknown key is an error naming the method and
    the keys it knows. ``pipeline`` (hub id or directory) is where the generator components
    the settings need come from. ``pretrained`` None: the method's default (frozen networks
    such as a foundation model's are pretrained).
    """
    method = get(method) if isinstance(method, str) else method
    defaults = method.default_cfg
    backbone = backbone or defaults.backbone
    mean, std = method.normalization(backbone)
    merged = merged_settings(method.Settings().to_feature(), feature or {})
    settings = method.Settings.from_feature(merged, method=method.name)
    needed = method.required_components(settings.to_feature())
    components: dict[str, dict] = {}
    if needed:
        if pipeline is None:
            raise ValueError(
                f"method {method.name!r} computes features with a generator's "
                f"{', '.join(needed)}: pass --pipeline (hub id or directory)"
            )
        components = pipeline_sources(pipeline, needed, revision=revision)
    config = DetectorConfig(
        method=method.name,
        backbone=backbone,
        input_size=input_size or defaults.input_size,
        mean=tuple(mean),
        std=tuple(std),
        feature=settings.to_feature(),
        components=components,
    )
    if pretrained is None:
        pretrained = defaults.pretrained
    resolved = method.resolve(config, settings, pretrained=pretrained)
    if "feature" in resolved:  # what the method resolved is read back through its settings
        method.Settings.from_feature(resolved["feature"], method=method.name)
    return dataclasses.replace(config, **resolved)


def merged_settings(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Nested overrides on top of defaults: ``{"lare": {"timestep": 100}}`` keeps the rest."""
    out = json.loads(json.dumps(defaults))
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged_settings(out[key], value)
        else:
            out[key] = value
    return out
