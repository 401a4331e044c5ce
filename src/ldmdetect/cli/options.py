"""The option types several ``ldmdetect`` commands share: one declaration (type, name, help)
per option, so ``--device`` or ``--workers`` reads the same in every command's help."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
BatchSize = Annotated[int | None, typer.Option(help="Images per model call: memory against speed.")]
DetectorSource = Annotated[str, typer.Option(help="Detector directory or hub id.")]
Sources = Annotated[list[Path], typer.Argument(help="Folders (recursive) or CSV manifests.")]
PipelineOutput = Annotated[Path, typer.Option(help="Pipeline directory to write.")]
Revision = Annotated[str | None, typer.Option(help="Hub revision of --pipeline.")]
GeneratorPipeline = Annotated[
    str | None,
    typer.Option(help="SD-format pipeline (hub id or directory) for generator features."),
]
Workers = Annotated[
    int | None,
    typer.Option("--workers", help="Decoding worker processes (default: cores - 1, at most 4)."),
]
PipelineOverride = Annotated[
    str | None,
    typer.Option(
        "--pipeline",
        help="Load the detector's generator components from this pipeline (hub id or "
        "directory) instead of the sources its config records.",
    ),
]
Engine = Annotated[
    str,
    typer.Option(
        help="local (this process and its decoding workers) or ray (Ray Data: an actor pool "
        "holding the model, on this machine or a cluster; needs the ray extra)."
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        help="With --engine ray: the cluster to join (auto, ray://HEAD:10001); default: start "
        "Ray on this machine, or use RAY_ADDRESS."
    ),
]
RayActors = Annotated[
    int | None,
    typer.Option(help="With --engine ray: model copies (default: one per GPU, else CPUs - 1)."),
]
CalibrationReals = Annotated[
    list[Path] | None,
    typer.Option(
        help="Real images like those you will scan, to set the thresholds on (repeatable): a "
        "folder (recursive; its first-level subfolders count as sources), a file, or an "
        "aligned dataset (its real crops; for a family head, its family threshold too)."
    ),
]
FeatureOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--feature",
        help="Feature setting KEY=VALUE (repeatable), e.g. lare.timestep=200, "
        "lare.image_size=128, lare.ensemble=4; VALUE is JSON or a string.",
    ),
]
PromptTemplate = Annotated[
    str | None,
    typer.Option(help='Prompt for generator-conditioned features, e.g. "a photo of a {class}".'),
]
Captioner = Annotated[
    str | None,
    typer.Option(
        help="Captions for caption-conditioned features (fakeinversion): blip2[:ID_OR_DIR] "
        "(default Salesforce/blip2-opt-2.7b), sidecar (photo.txt, else --prompt-template) "
        "or fixed:TEXT."
    ),
]
