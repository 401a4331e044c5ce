"""DIRE (Wang et al., ICCV 2023): a ResNet-50 on the diffusion reconstruction error map."""

from ldmdetect.methods.dire.method import *  # noqa: F403 (the method module's __all__)
from ldmdetect.methods.dire.method import __all__ as __all__
