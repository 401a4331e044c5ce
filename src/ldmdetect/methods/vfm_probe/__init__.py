"""A linear probe on a frozen vision foundation model (the UnivFD-style baseline).

The method package: ``method`` (the method, its transform and feature step), ``settings``
(its tiny settings) and ``cost`` (its per-image cost spec).
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
