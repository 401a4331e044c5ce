"""AEROBLADE (Ricker et al., CVPR 2024): training-free detection by autoencoder reconstruction.

The method package: ``method`` (the method, its transform and feature step), ``settings``
(its tiny settings), ``cost`` (its per-image cost spec) and ``demo`` (its demo recipe).
"""

from ldmdetect.methods.aeroblade.method import (
    Aeroblade,
    AerobladeConfig,
    AerobladeExplanation,
    AerobladeFeature,
    AerobladeTransform,
    explain,
    resolve_autoencoders,
)

__all__ = [
    "Aeroblade",
    "AerobladeConfig",
    "AerobladeExplanation",
    "AerobladeFeature",
    "AerobladeTransform",
    "explain",
    "resolve_autoencoders",
]
