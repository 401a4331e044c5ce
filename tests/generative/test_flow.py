"""Rectified flow against diffusers' own scheduler and pipelines (known answers)."""

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
