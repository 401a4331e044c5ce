"""FakeInversion (Cazenavette et al., CVPR 2024): classify an image next to its DDIM inversion.

The method package: ``method`` (the method, its transform and feature step), ``settings``
(its tiny settings), ``cost`` (its per-image cost spec) and ``demo`` (its demo recipe).
"""

from ldmdetect.methods.fakeinversion.method import (
    DEFAULT_CAPTIONER,
    DEFAULT_MAP_SIZE,
    FakeInversion,
    InversionFeature,
)

__all__ = [
    "DEFAULT_CAPTIONER",
    "DEFAULT_MAP_SIZE",
    "FakeInversion",
    "InversionFeature",
]
