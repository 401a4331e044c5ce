"""The shipped mini generators: small *trained* latent generators in diffusers' layouts.

The mini LDM (``mini_ldm/``) is an SD 1.x-style latent diffusion model; the mini flow model
(``mini_flow/``) an SD3-style rectified-flow transformer on a 16-channel autoencoder, so that
detectors can be tested on a generator family they were not trained on.

No Stable Diffusion weights are reachable offline, yet detectors that exploit the generator's
autoencoder need a trained LDM: a random autoencoder leaves no faithful-reconstruction traces
and a random UNet generates noise. The package ships one (``mini_ldm/``: autoencoder and UNet in
fp16, a tiny text encoder in fp32, so a plain ``StableDiffusionPipeline.from_pretrained`` runs
in fp32), trained on CPU from the colour photos bundled with scikit-image, scikit-learn and
matplotlib. Its images are LDM-generated in miniature: a test bed for detectors, not a stand-in
for Stable Diffusion in real-world detection.

This module holds what runs at inference: where the weights are, which photos they never saw,
and the captions they were trained with. The training recipes are scripts beside the package,
``recipes/mini_ldm/train.py`` and ``recipes/mini_flow/train.py`` in a source checkout (like
diffusers' ``examples/``).
"""

from __future__ import annotations

import json
from pathlib import Path

# Subject captions of the bundled colour photos; both mini generators learned "a photo of a
# cat" etc.
CAPTIONS: dict[str, str] = {
    "astronaut": "a photo of an astronaut",
    "chelsea": "a photo of a cat",
    "coffee": "a photo of a coffee cup",
    "rocket": "a photo of a rocket",
    "motorcycle": "a photo of a motorcycle",
    "hubble_deep_field": "a photo of galaxies in deep space",
    "ihc": "a photo of stained tissue under a microscope",
    "retina": "a photo of a retina",
    "china": "a photo of a chinese temple",
    "flower": "a photo of a flower",
    "grace_hopper": "a photo of an officer in uniform",
}


def mini_ldm_dir() -> Path:
    """The shipped, trained mini LDM: load it with ``StableDiffusionPipeline.from_pretrained``."""
    return Path(__file__).with_name("mini_ldm")


def mini_ldm_training_log() -> dict:
    """The shipped model's ``training_log.json``: its config, losses, PSNR, time and machine."""
    return json.loads((mini_ldm_dir() / "training_log.json").read_text())


def mini_ldm_heldout_subjects() -> tuple[str, ...]:
    """Photos the shipped mini LDM never trained on, as its training log records them."""
    return tuple(mini_ldm_training_log()["heldout_photos"])


def mini_flow_dir() -> Path:
    """The shipped, trained mini flow model (SD3 family): load it with
    ``StableDiffusion3Pipeline.from_pretrained``."""
    return Path(__file__).with_name("mini_flow")


def mini_flow_training_log() -> dict:
    """The shipped mini flow model's ``training_log.json``."""
    return json.loads((mini_flow_dir() / "training_log.json").read_text())


def mini_flow_heldout_subjects() -> tuple[str, ...]:
    """Photos the shipped mini flow model never trained on, as its training log records them."""
    return tuple(mini_flow_training_log()["heldout_photos"])
