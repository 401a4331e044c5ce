"""Compute a method's device-side features once and store them in a sharded feature cache.

LaRE maps (and DDIM inversions) cost UNet passes per image; ``extract`` pays that once, and
training reads the cache by image id. The cache pins the settings that produced it, so a rerun
with the same settings resumes (ids already stored are skipped) and one with other settings is
refused instead of mixing features.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ldmdetect import methods
from ldmdetect.engine.loader import load_each
from ldmdetect.engine.scan import PrepareFile
from ldmdetect.features.cache import FeatureCache
from ldmdetect.generative.loading import resolve_device
from ldmdetect.io.datasets import resolve_sources
from ldmdetect.methods.registry import Sample


@dataclass
class ExtractSummary:
    cache: Path
    images: int = 0
    computed: int = 0
    already_cached: int = 0
    errors: dict[str, str] = field(default_factory=dict)


def extract_features(
    method_name: str,
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    pipeline: str | os.PathLike | None = None,
    revision: str | None = None,
    feature: dict[str, Any] | None = None,
    backbone: str | None = None,
    input_size: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    num_workers: int = 0,
    progress: bool = False,
) -> ExtractSummary:
    """Features of every image in ``sources`` (folders or CSV manifests) into ``output``.

    ``pipeline`` is needed by methods whose features come from a generator's components
    (``lare2``); ``backbone`` and ``input_size`` matter to the others (a foundation model's
    embedding), and must match the detector's that will read the cache.
    Bad files are reported in the summary and skipped; the rest are cached.
    """
    method = methods.get(method_name)
    # The same config training makes (the probe's reachable backbone and weights' source
    # included), so the cache's settings match the detector's that will read it.
    config = methods.make_config(
        method,
        backbone=backbone,
        input_size=input_size,
        feature=dict(feature or {}),
        pipeline=pipeline,
        revision=revision,
    )
    step = method.build_features(config, device=resolve_device(device))
    if step is None:
        raise ValueError(f"method {method_name!r} has no features to extract with {feature}")
    paths = [p for source in sources for p in resolve_sources(source)]
    summary = ExtractSummary(Path(output), images=len(paths))
    prepare = PrepareFile(method.prepare(config))
    pending: list[Sample] = []
    with FeatureCache(output, settings=step.settings(), shard_size=256) as cache:

        def flush() -> None:
            if pending:
                step.add_to(method.collate(pending), cache)
                pending.clear()

        results = load_each(paths, prepare, num_workers=num_workers, prefetch=2 * batch_size)
        for result in tqdm(results, total=len(paths), desc="extract", disable=not progress):
            if result.error is not None:
                summary.errors[result.path] = result.error
                continue
            sample = result.value
            if sample["id"] in cache or any(p["id"] == sample["id"] for p in pending):
                summary.already_cached += 1
                continue
            summary.computed += 1
            pending.append(sample)
            if len(pending) >= batch_size:
                flush()
        flush()
    return summary
