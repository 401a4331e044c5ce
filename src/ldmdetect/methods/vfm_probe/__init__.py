"""A linear probe on a frozen vision foundation model (the UnivFD-style baseline).

The method package: ``method`` (the method, its transform and feature step), ``settings``
(its tiny settings), ``cost`` (its per-image cost spec) and ``demo`` (its demo recipe).
"""

from ldmdetect.methods.vfm_probe.method import (
    ResizeCropTransform,
    VFMEmbedding,
    VFMProbe,
    fit_linear_probe,
)

__all__ = [
    "ResizeCropTransform",
    "VFMEmbedding",
    "VFMProbe",
    "fit_linear_probe",
]
