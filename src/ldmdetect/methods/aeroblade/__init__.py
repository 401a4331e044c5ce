"""AEROBLADE (Ricker et al., CVPR 2024): training-free detection by autoencoder reconstruction."""

from ldmdetect.methods.aeroblade.method import *  # noqa: F403 (the method module's __all__)
from ldmdetect.methods.aeroblade.method import __all__ as __all__
