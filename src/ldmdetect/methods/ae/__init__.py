"""AE-reconstruction detector ("Detecting AutoEncoder is Enough", arXiv 2411.06441).

The method package: ``method`` (the method, its transform and feature step), ``settings``
(its tiny settings), ``cost`` (its per-image cost spec) and ``demo`` (its demo recipe).
"""

from ldmdetect.methods.ae.method import (
    AEReconstruction,
    CropTransform,
    classify_crops,
)

__all__ = [
    "AEReconstruction",
    "CropTransform",
    "classify_crops",
]
