"""ldmdetect: tell whether an image was made by a latent diffusion model."""

__version__ = "0.1.0"
