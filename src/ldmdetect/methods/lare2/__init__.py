"""LaRE^2 (Luo et al., CVPR 2024): latent reconstruction error + error-guided refinement."""

from ldmdetect.methods.lare2.method import *  # noqa: F403 (the method module's __all__)
from ldmdetect.methods.lare2.method import __all__ as __all__
