"""``ldmdetect extract``: cache a method's generator features, locally or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ldmdetect.cli.common import (
    ConfigDefaults,
    command,
    engine_name,
    feature_settings,
    finish,
    num_workers,
    ray_engine,
)
from ldmdetect.cli.options import (
    BatchSize,
    Captioner,
    Device,
    Engine,
    FeatureOptions,
    GeneratorPipeline,
    PromptTemplate,
    RayActors,
    RayAddress,
    Revision,
    Sources,
    Workers,
)

commands = typer.Typer()


@command(
    commands,
    ConfigDefaults("ldmdetect.engine.extract:extract_features", "batch_size", "device"),
)
def extract(
    sources: Sources,
    output: Annotated[Path, typer.Option(help="Feature cache directory (resumable).")],
    method: Annotated[str, typer.Option(help="Method whose features to cache, e.g. lare2.")],
    pipeline: GeneratorPipeline = None,
    revision: Revision = None,
    feature: FeatureOptions = None,
    prompt_template: PromptTemplate = None,
    backbone: Annotated[
        str | None, typer.Option(help="vfm-probe: the foundation model (default: the method's).")
    ] = None,
    input_size: Annotated[int | None, typer.Option(help="Default: the method's.")] = None,
    captioner: Captioner = None,
    batch_size: BatchSize = None,
    device: Device = None,
    workers: Workers = None,
    engine: Engine = "local",
    ray_address: RayAddress = None,
    ray_actors: RayActors = None,
) -> None:
    """Cache a method's generator features (LaRE maps, ...) by image id; resumes a stopped run."""
    from ldmdetect.engine.extract import extract_features

    options = {
        "pipeline": pipeline,
        "revision": revision,
        "feature": feature_settings(feature, prompt_template, captioner),
        "batch_size": batch_size,
        "device": device,
    }
    if engine_name(engine) == "ray":
        if backbone is not None or input_size is not None:
            raise ValueError(
                "--engine ray extracts generator features; drop --backbone/--input-size"
            )
        run = ray_engine().ray_extract
        summary = run(method, sources, output, actors=ray_actors, address=ray_address, **options)
    else:
        summary = extract_features(
            method,
            sources,
            output,
            num_workers=num_workers(workers),
            progress=True,
            backbone=backbone,
            input_size=input_size,
            **options,
        )
    finish(
        summary.errors,
        f"{summary.images} images: {summary.computed} computed, {summary.already_cached} "
        f"already cached, {len(summary.errors)} failed -> {output}",
    )
