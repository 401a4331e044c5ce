"""``ldmdetect synris``: pair each fake with its most similar real (FakeInversion's SynRIS)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ldmdetect.cli.common import ConfigDefaults, command, fail, finish, num_workers
from ldmdetect.cli.options import BatchSize, Device, Workers

commands = typer.Typer()


#: ``synris``'s options that are :class:`SynRISConfig` settings.
SYNRIS_SETTINGS = ConfigDefaults(
    "ldmdetect.engine.synris:SynRISConfig", "allow_reuse", "embedder", "batch_size", "device"
)


@command(commands, SYNRIS_SETTINGS)
def synris(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option(help="Folder for pairs.csv, the sheet and the index.")],
    fake: Annotated[
        list[Path] | None, typer.Option(help="Generated images: folder or file (repeatable).")
    ] = None,
    real_pool: Annotated[
        list[Path] | None,
        typer.Option(help="Real images to search: folder or file (repeatable)."),
    ] = None,
    pairs_jsonl: Annotated[
        Path | None,
        typer.Option(help='Given pairs, {"fake": path, "real": path} per line (no download).'),
    ] = None,
    allow_reuse: Annotated[
        bool | None,
        typer.Option(help="Let several fakes share one real (default: each real once)."),
    ] = None,
    embedder: Annotated[
        str | None,
        typer.Option(
            help="auto (CLIP ViT-B/32, offline EfficientNet-Lite0), openclip:NAME, "
            "openclip:NAME/TAG or timm:NAME."
        ),
    ] = None,
    batch_size: BatchSize = None,
    device: Device = None,
    workers: Workers = None,
) -> None:
    """SynRIS: pair each fake with its most similar real (reverse image search); pairs.csv."""
    from ldmdetect.engine.synris import run_synris

    config = SYNRIS_SETTINGS.build(ctx.params, num_workers=num_workers(workers))
    try:
        result = run_synris(
            output,
            fake=fake or [],
            real_pool=real_pool or [],
            pairs_jsonl=pairs_jsonl,
            config=config,
        )
    except ImportError as err:
        raise fail(str(err)) from None
    summary = result.summary
    if summary["embedder"].get("note"):
        typer.secho(summary["embedder"]["note"], fg=typer.colors.YELLOW, err=True)
    for reason, count in result.skipped.items():
        typer.secho(f"skipped {count} pair(s): {reason}", fg=typer.colors.YELLOW, err=True)
    finish(
        result.errors,
        f"{summary['n_pairs']} pairs ({summary['n_distinct_reals']} distinct reals, mean "
        f"similarity {summary['similarity_mean']:.4f}, embedder {summary['embedder']['name']}) "
        f"-> {result.files['pairs']}",
    )
