"""``python -m ldmdetect.cli``: the command line, as ``python -m ldmdetect``."""

from ldmdetect.cli import app

app()
