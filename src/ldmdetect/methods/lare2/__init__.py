"""LaRE^2 (Luo et al., CVPR 2024): latent reconstruction error + error-guided refinement.

The method package: ``method`` (the method, its transform and feature step), ``settings``
(its tiny settings), ``cost`` (its per-image cost spec) and ``demo`` (its demo recipe).
"""

from ldmdetect.methods.lare2.method import (
    DEFAULT_PROMPT_TEMPLATE,
    LaRE2,
    LareFeature,
    LareTransform,
    latent_channels,
    latent_factor,
)

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "LaRE2",
    "LareFeature",
    "LareTransform",
    "latent_channels",
    "latent_factor",
]
