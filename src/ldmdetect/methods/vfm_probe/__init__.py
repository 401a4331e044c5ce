"""A linear probe on a frozen vision foundation model (the UnivFD-style baseline)."""

from ldmdetect.methods.vfm_probe.method import *  # noqa: F403 (the method module's __all__)
from ldmdetect.methods.vfm_probe.method import __all__ as __all__
