"""FakeInversion (Cazenavette et al., CVPR 2024): classify an image next to its DDIM inversion."""

from ldmdetect.methods.fakeinversion.method import *  # noqa: F403 (the method module's __all__)
from ldmdetect.methods.fakeinversion.method import __all__ as __all__
