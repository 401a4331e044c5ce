"""Rectified flow against diffusers' own scheduler and pipelines (known answers)."""

import itertools

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ldmdetect.generative.components import load_sd_components, pack_latents, unpack_latents
from ldmdetect.generative.flow import (
    euler_invert,
    euler_sample,
    flow_levels,
    flow_noise,
    flow_velocity,
)
from ldmdetect.generative.tiny import build_tiny_flow_scheduler


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_noising_is_the_schedulers_scale_noise_and_the_target_its_velocity(family):
    scheduler = build_tiny_flow_scheduler(family)
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 16, 4, 4, generator=generator), torch.randn(2, 16, 4, 4)
    for index in (0, 137, 800, 998):
        t = scheduler.timesteps[index]
        level = float(scheduler.sigmas[index])
        expected = scheduler.scale_noise(x0, t.expand(2), noise)
        torch.testing.assert_close(flow_noise(x0, noise, level), expected)
        # The Euler step the scheduler takes with the true velocity lands back on the line.
        stepper = build_tiny_flow_scheduler(family)
        stepper.set_begin_index(index)
        stepped = stepper.step(flow_velocity(x0, noise), t, expected).prev_sample
        following = float(scheduler.sigmas[index + 1])
        torch.testing.assert_close(stepped, flow_noise(x0, noise, following))
    torch.testing.assert_close(flow_noise(x0, noise, 0.0), x0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        flow_noise(x0, noise, 1.5)


def test_euler_inversion_exactly_reverses_the_sampler_for_a_constant_velocity():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    levels = flow_levels(scheduler.config, 7, 16, family="sd3")
    velocity = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    x0 = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(2))
    calls = []

    def constant(x, level):
        calls.append(level)
        return velocity

    noise = euler_invert(x0, constant, levels)
    # x_1 = x_0 + (1 - 0) v exactly, whatever the grid.
    torch.testing.assert_close(noise, x0 + velocity)
    assert calls == sorted(calls) and calls[0] == 0.0  # upwards from the clean latent
    torch.testing.assert_close(euler_sample(noise, constant, levels), x0)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_euler_sampling_with_the_loaded_components_is_the_pipelines_generation(
    family, tiny_family_dir
):
    """Conditioning, the denoiser call (FLUX's packing, ids, guidance) and the level grid,
    all checked at once against the family's own diffusers pipeline."""
    directory = tiny_family_dir(family)
    components = load_sd_components(directory, device="cpu")
    from ldmdetect.generative.families import get_family

    pipe = get_family(family).pipeline_class().from_pretrained(directory)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    steps = 3
    with torch.no_grad():
        kwargs = {"guidance_scale": 1.0} if family == "sd3" else {}
        latents = pack_latents(noise) if family == "flux" else noise
        out = pipe(
            "a cat",
            height=64,
            width=64,
            num_inference_steps=steps,
            latents=latents,
            output_type="latent",
            **kwargs,
        ).images
    if family == "flux":
        out = unpack_latents(out, 16, 8, 8)
    levels = flow_levels(components.scheduler.config, steps, 16, family=family)
    torch.testing.assert_close(levels.float(), pipe.scheduler.sigmas.float())
    conditioning = components.condition(["a cat"])

    def velocity(x, level):
        return components.predict(x, torch.tensor([level * 1000]), conditioning)

    with torch.no_grad():
        ours = euler_sample(noise, velocity, levels)
    torch.testing.assert_close(ours, out, rtol=1e-4, atol=1e-5)


# A trained flow model: the Euler inversion's round trip on a velocity field that bends.
#
# Rectified flow's Euler round trip (up the levels, then down again) misses by, per step, the step's
# length times how much the velocity changes along it: it is exact on a straight flow, and its error
# measures the trajectories' curvature. A randomly initialised network's output hardly depends on
# where it is evaluated, so its field is nearly constant and its round trip nearly exact: the tiny
# SD3 transformer gave 0.036 relative error at random and 0.156 after 300 training steps on four
# latents (10 steps); the MLP below gives 0.003 at random against 0.073 trained (16 steps, SD3
# grid). Unlike DDIM on a random UNet, whose noise predictions turn into large, inconsistent jumps,
# a random flow is no yardstick for the inversion. What holds, and what is checked, is that on a
# model trained until it generates its data, whose trajectories curve as they commit to one of the
# data's two modes, the round trip converges at first order: measured 0.160 / 0.073 / 0.037 / 0.018
# at 8 / 16 / 32 / 64 steps on SD3's grid of levels, 0.105 / 0.050 / 0.025 / 0.013 on FLUX's (ratios
# 0.45 to 0.50 per doubling).

FLOW_DIM = 8


class _VelocityMLP(torch.nn.Module):
    """v(x, s) for FLOW_DIM-dimensional points: an MLP on x and sinusoidal features of s."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(FLOW_DIM + 16, 64),
            torch.nn.SiLU(),
            torch.nn.Linear(64, 64),
            torch.nn.SiLU(),
            torch.nn.Linear(64, FLOW_DIM),
        )

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        angles = level[:, None] * torch.pi / 2 * 2.0 ** torch.arange(8)
        return self.net(torch.cat([x, angles.sin(), angles.cos()], dim=1))

    def velocity(self, x: torch.Tensor, level: float) -> torch.Tensor:
        return self(x, torch.full((x.shape[0],), level))


_MODE = (
    torch.nn.functional.normalize(
        torch.randn(FLOW_DIM, generator=torch.Generator().manual_seed(0)), dim=0
    )
    * FLOW_DIM**0.5
)


def _two_modes(n: int, generator: torch.Generator) -> torch.Tensor:
    """Points around +MODE or -MODE (std 0.3): data whose flow bends as it picks a mode."""
    sign = torch.randint(0, 2, (n, 1), generator=generator) * 2 - 1
    return sign * _MODE + 0.3 * torch.randn(n, FLOW_DIM, generator=generator)


@pytest.fixture(scope="module")
def trained_flow() -> _VelocityMLP:
    """The MLP trained with rectified flow's objective: at a uniform level s, predict the
    velocity e - x_0 from x_s = (1 - s) x_0 + s e."""
    model = _VelocityMLP(seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(300):
        x0 = _two_modes(128, generator)
        noise = torch.randn(128, FLOW_DIM, generator=generator)
        level = torch.rand(128, generator=generator)
        xs = (1 - level[:, None]) * x0 + level[:, None] * noise  # flow_noise, per row
        loss = (model(xs, level) - flow_velocity(x0, noise)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


def _round_trip_error(velocity, x0: torch.Tensor, levels: torch.Tensor) -> float:
    """Mean relative L2 distance between x_0 and its Euler inversion sampled back."""
    back = euler_sample(euler_invert(x0, velocity, levels), velocity, levels)
    return float(((back - x0).norm(dim=1) / x0.norm(dim=1)).mean())


def test_the_trained_flow_generates_its_two_modes(trained_flow):
    levels = flow_levels(build_tiny_flow_scheduler("sd3").config, 32, 16, family="sd3")
    noise = torch.randn(256, FLOW_DIM, generator=torch.Generator().manual_seed(2))
    samples = euler_sample(noise, trained_flow.velocity, levels)
    along = samples @ _MODE / _MODE.square().sum()  # +-1 at the modes
    assert 0.25 < float((along > 0).float().mean()) < 0.75  # both modes
    assert float((along.abs() - 1).abs().median()) < 0.2  # on them, not between
    assert float(((along.abs() - 1).abs() < 0.5).float().mean()) > 0.9


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_euler_inversion_on_a_trained_flow_converges_at_first_order(family, trained_flow):
    config = build_tiny_flow_scheduler(family).config
    x0 = _two_modes(64, torch.Generator().manual_seed(3))  # unseen draws of the data
    errors = [
        _round_trip_error(trained_flow.velocity, x0, flow_levels(config, n, 16, family=family))
        for n in (8, 16, 32)
    ]
    for coarse, fine in itertools.pairwise(errors):
        assert 0.3 < fine / coarse < 0.65, errors  # halves when the steps double: order 1
    assert errors[-1] < 0.1, errors
    # The inversion carries x_0 off its mode (+-1 along MODE) to a unit-Gaussian-like point
    # (measured: std 1.02 / 1.03, mean |coordinate along MODE| 0.25).
    noise = euler_invert(x0, trained_flow.velocity, flow_levels(config, 32, 16, family=family))
    assert 0.8 < float(noise.std()) < 1.2
    assert float((noise @ _MODE / _MODE.square().sum()).abs().mean()) < 0.5
    # Why a random network is no yardstick: its near-constant field is almost straight, so
    # its round trip is nearly exact however little it has learned.
    random = _VelocityMLP(seed=0).eval().requires_grad_(False)
    levels = flow_levels(config, 16, 16, family=family)
    assert _round_trip_error(random.velocity, x0, levels) < errors[1] / 5
