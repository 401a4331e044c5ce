"""DIRE (Wang et al., ICCV 2023): a ResNet-50 on the diffusion reconstruction error map.

The method package: ``method`` (the method, its transform and feature step), ``settings``
(its tiny settings) and ``cost`` (its per-image cost spec).
"""

from ldmdetect.methods.dire.method import (
    Dire,
    DireFeature,
)

__all__ = [
    "Dire",
    "DireFeature",
]
