"""DIRE (Wang et al., ICCV 2023): a ResNet-50 on the diffusion reconstruction error map.

The method package: ``method`` (the method, its transform and feature step), ``settings``
(its tiny settings), ``cost`` (its per-image cost spec) and ``demo`` (its demo recipe).
"""

from ldmdetect.methods.dire.method import (
    Dire,
    DireFeature,
)

__all__ = [
    "Dire",
    "DireFeature",
]
