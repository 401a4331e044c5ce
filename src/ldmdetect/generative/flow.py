"""Rectified flow as SD3 and FLUX.1 train and sample it (diffusers' ``FlowMatchEulerDiscrete``).

A noise level s in [0, 1] mixes the clean latent x_0 and Gaussian noise e along a straight line,
x_s = (1 - s) x_0 + s e (``FlowMatchEulerDiscreteScheduler.scale_noise``); the transformer,
given x_s and the timestep 1000 s, predicts the line's velocity v = e - x_0. Sampling walks the
ODE dx/ds = v with Euler steps x_{s'} = x_s + (s' - s) v from s = 1 down to 0 over a grid of
noise levels; inversion walks the same grid the other way, from 0 up to 1.

These are pure functions of tensors and a scheduler config, so they are checked against the
scheduler itself (tests/generative/test_flow.py) and shared by LaRE and the inversions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

#: velocity(x, s) for a batch of latents x at noise level s (a float).
Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def flow_noise(latents: torch.Tensor, noise: torch.Tensor, level: float) -> torch.Tensor:
    """x_s = (1 - s) x_0 + s e: the latents noised to level ``s`` in [0, 1]."""
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"a flow-matching noise level is in [0, 1], got {level}")
    return (1.0 - level) * latents + level * noise


def flow_velocity(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = e - x_0: what a flow-matching transformer is trained to predict at every level."""
    return noise - latents


def _time_shift_mu(config: Any, image_seq_len: int) -> float:
    """diffusers' ``calculate_shift``: the dynamic shift's mu, linear in the token count."""
    base_len = config.get("base_image_seq_len", 256)
    max_len = config.get("max_image_seq_len", 4096)
    base_shift = config.get("base_shift", 0.5)
    max_shift = config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + base_shift - slope * base_len


def flow_levels(config: Any, steps: int, image_seq_len: int, *, family: str) -> torch.Tensor:
    """The ``steps + 1`` noise levels ``family``'s pipeline samples through, from 1 down to 0.

    As the pipelines build them from the scheduler ``config``: SD3's
    ``set_timesteps(steps)`` (the training grid's range, fixed shift 3.0), FLUX.1's evenly
    spaced levels 1 .. 1/steps; both shifted by the scheduler, with a dynamic shift
    (``use_dynamic_shifting``, FLUX.1's) that grows with the number of image tokens
    ``image_seq_len`` (latent cells / 4: 2x2 patches). Float64, on the CPU.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    kwargs: dict[str, Any] = {}
    if scheduler.config.use_dynamic_shifting:
        kwargs["mu"] = _time_shift_mu(scheduler.config, image_seq_len)
    if family == "flux":
        kwargs["sigmas"] = np.linspace(1.0, 1 / steps, steps)
        scheduler.set_timesteps(device="cpu", **kwargs)
    else:
        scheduler.set_timesteps(steps, device="cpu", **kwargs)
    return scheduler.sigmas.double()


def euler_sample(latents: torch.Tensor, velocity: Velocity, levels: torch.Tensor) -> torch.Tensor:
    """Euler steps down ``levels`` (decreasing, e.g. :func:`flow_levels`): x at levels[0] ->
    x at levels[-1]. Each step evaluates the velocity at its start, as diffusers' scheduler
    ``step`` does. Float32 throughout."""
    x = latents.float()
    for here, there in zip(levels[:-1].tolist(), levels[1:].tolist(), strict=True):
        x = x + (there - here) * velocity(x, here).float()
    return x


def euler_invert(latents: torch.Tensor, velocity: Velocity, levels: torch.Tensor) -> torch.Tensor:
    """The same Euler walk backwards: x at levels[-1] (clean, s = 0) -> x at levels[0] (noise).

    Each step evaluates the velocity at its start, the lower level, so a step is the exact
    reverse of :func:`euler_sample`'s step whenever the velocity does not change along it (the
    usual first-order inversion of rectified flow, as DDIM inversion is for DDPM models).
    """
    x = latents.float()
    for here, there in zip(levels.flip(0)[:-1].tolist(), levels.flip(0)[1:].tolist(), strict=True):
        x = x + (there - here) * velocity(x, here).float()
    return x
