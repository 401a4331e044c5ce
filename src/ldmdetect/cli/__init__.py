"""``ldmdetect`` command line: thin wrappers over the Python API.

One module per command group (``data``, ``train``, ``extract``, ``evaluate``, ``scan``,
``demo``, ``serve``, ``synris``, ``zoo``), each declaring its commands on its own
``commands`` Typer; the options, defaults and helpers they share are in ``common``. The
top-level help lists the commands in the order they are added below: a workflow's order.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ldmdetect.cli import data, demo, evaluate, extract, scan, serve, synris, train, zoo
from ldmdetect.cli.common import ConfigDefaults, default_of
from ldmdetect.memory import keep_freed_memory

__all__ = ["ConfigDefaults", "app", "default_of"]

app = typer.Typer(
    help="Detect images made by latent diffusion models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    threads: Annotated[
        int | None,
        typer.Option(
            envvar="LDMDETECT_NUM_THREADS",
            help="Torch CPU threads. On small or busy machines, 1 can be several times faster.",
        ),
    ] = None,
) -> None:
    """Detect images made by latent diffusion models."""
    keep_freed_memory()
    if threads:
        import torch

        torch.set_num_threads(threads)


for group in (zoo, data, train, extract, evaluate, scan, demo, serve, synris):
    app.registered_commands += group.commands.registered_commands
app.add_typer(zoo.zoo_app, name="zoo")
app.add_typer(data.data_app, name="data")
