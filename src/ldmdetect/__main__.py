"""``python -m ldmdetect``: the command line, also as launchers start it
(``accelerate launch -m ldmdetect train ...``, ``torchrun -m ldmdetect train ...``)."""

from ldmdetect.cli import app

app(prog_name="ldmdetect")
