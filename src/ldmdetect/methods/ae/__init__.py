"""AE-reconstruction detector ("Detecting AutoEncoder is Enough", arXiv 2411.06441)."""

from ldmdetect.methods.ae.method import *  # noqa: F403 (the method module's __all__)
from ldmdetect.methods.ae.method import __all__ as __all__
