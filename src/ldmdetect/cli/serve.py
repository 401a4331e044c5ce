"""``ldmdetect serve``: the HTTP service and its page."""

from __future__ import annotations

from typing import Annotated

import typer

from ldmdetect.cli.common import ConfigDefaults, command, fail
from ldmdetect.cli.options import DetectorSource, Device

commands = typer.Typer()


# The service's own defaults (fpr, host, port) need the serve extra to be read, and the
# command must still print its "install the extra" line without it: stated here instead.
@command(commands, ConfigDefaults("ldmdetect.detector:Detector.from_pretrained", "device"))
def serve(
    detector: DetectorSource,
    host: Annotated[
        str, typer.Option(help="Interface to listen on; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    port: int = 8000,
    fpr: Annotated[
        float, typer.Option(help="Labels use the threshold calibrated at this false-positive rate.")
    ] = 0.01,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="LDMDETECT_SERVE_TOKEN", help="Require 'Authorization: Bearer TOKEN' on /v1/."
        ),
    ] = None,
    device: Device = None,
) -> None:
    """HTTP service and web page: POST /v1/detect, /v1/detect/batch; docs at /docs."""
    try:
        from ldmdetect.serve import create_app, run_server
    except ImportError as err:
        message = f"serving needs the serve extra: pip install 'ldmdetect[serve]' ({err})"
        raise fail(message) from None
    from ldmdetect.detector import Detector

    loaded = Detector.from_pretrained(detector, device=device)
    app_ = create_app(loaded, fpr=fpr, token=token, detector_id=detector)
    typer.echo(f"serving {detector} on http://{host}:{port} (page at /, API docs at /docs)")
    run_server(app_, host=host, port=port)
