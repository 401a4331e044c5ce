"""The parts of a Stable-Diffusion-format pipeline that feature extractors drive by hand.

LaRE, DIRE-style inversion and AEROBLADE call the VAE, the UNet and the noise schedule
directly rather than through ``StableDiffusionPipeline``: they need one forward pass at a
chosen timestep, not a sampling loop. :func:`load_sd_components` loads exactly the components
a method asks for, through :func:`~ldmdetect.generative.loading.load_component` (one device and
dtype policy, one error type), and records where each came from so a detector config can name
them.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ldmdetect.generative.loading import (
    ComponentSource,
    load_component,
    resolve_device,
)

COMPONENT_NAMES: tuple[str, ...] = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")

# The class each subfolder of an SD v1/v2 pipeline is loaded with. The scheduler is always
# DDPM, whatever class the pipeline ships: see ``load_sd_components``.
_CLASSES: dict[str, type] = {
    "vae": AutoencoderKL,
    "unet": UNet2DConditionModel,
    "text_encoder": CLIPTextModel,
    "tokenizer": CLIPTokenizer,
    "scheduler": DDPMScheduler,
}

# Prompt embeddings kept per instance. Class-name prompts repeat across a whole dataset and stay
# cached; per-image captions rarely repeat, so the cache is bounded (LRU) instead of growing by
# one 77 x dim tensor per image.
PROMPT_CACHE_SIZE = 1024


@dataclass
class SDComponents:
    """Components of one SD-format pipeline; each is None when it was not requested.

    ``scheduler`` is the forward (noising) process: a ``DDPMScheduler`` built from the
    pipeline's own scheduler config, so ``add_noise`` / ``get_velocity`` use the pipeline's
    betas and ``config.prediction_type`` says what the UNet predicts.
    ``sources`` maps each loaded component's name to ``ComponentSource.to_dict()``.
    """

    vae: AutoencoderKL | None = None
    unet: UNet2DConditionModel | None = None
    text_encoder: CLIPTextModel | None = None
    tokenizer: CLIPTokenizer | None = None
    scheduler: DDPMScheduler | None = None
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    _prompt_cache: OrderedDict[str, torch.Tensor] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )

    def _models(self) -> list[torch.nn.Module]:
        return [m for m in (self.unet, self.vae, self.text_encoder) if m is not None]

    @property
    def device(self) -> torch.device:
        """The device of the loaded models (they are loaded together, so they share it)."""
        models = self._models()
        if not models:
            raise ValueError("no model component (vae, unet, text_encoder) is loaded")
        return models[0].device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the models run in (float32 on CPU, bf16/fp16 on GPU by default)."""
        models = self._models()
        if not models:
            raise ValueError("no model component (vae, unet, text_encoder) is loaded")
        return models[0].dtype

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """(len(prompts), seq, dim) text-encoder hidden states, as the UNet's conditioning.

        Tokenised as the SD pipeline does (padded to the tokenizer's ``model_max_length``,
        truncated), last hidden state. Each distinct prompt runs through the text encoder once
        per instance: prompts not yet cached go through in one batch, and repeats are copies.
        Returned on the components' device in the text encoder's dtype.
        """
        if self.tokenizer is None or self.text_encoder is None:
            raise ValueError("encode_prompts needs the tokenizer and text_encoder components")
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not a single string")
        prompts = list(prompts)
        if not prompts:
            hidden = self.text_encoder.config.hidden_size
            return torch.empty(
                0,
                self.tokenizer.model_max_length,
                hidden,
                device=self.text_encoder.device,
                dtype=self.text_encoder.dtype,
            )
        missing = list(dict.fromkeys(p for p in prompts if p not in self._prompt_cache))
        if missing:
            embeddings = self._run_text_encoder(missing)
            for prompt, embedding in zip(missing, embeddings, strict=True):
                # A copy, so that evicting one prompt frees its memory.
                self._prompt_cache[prompt] = embedding.clone()
        for prompt in dict.fromkeys(prompts):
            self._prompt_cache.move_to_end(prompt)
        result = torch.stack([self._prompt_cache[p] for p in prompts])
        while len(self._prompt_cache) > PROMPT_CACHE_SIZE:
            self._prompt_cache.popitem(last=False)
        return result

    @torch.inference_mode()
    def _run_text_encoder(self, prompts: list[str]) -> torch.Tensor:
        assert self.tokenizer is not None and self.text_encoder is not None
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = self.text_encoder.device
        # SD's pipeline passes the attention mask only to encoders configured to use one; the
        # CLIP encoders of SD 1.x/2.x attend over the padding, and their UNets were trained so.
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(device)
        return self.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]


def load_sd_components(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | None = None,
    names: Sequence[str] = COMPONENT_NAMES,
) -> SDComponents:
    """Load the named components of an SD-format pipeline (hub id or local directory).

    Models come back frozen, in eval mode, on ``device`` in ``dtype`` (default: float32 on
    CPU, bf16 on GPUs that have it; see :func:`~ldmdetect.generative.loading.default_dtype`).

    The scheduler is the pipeline's own ``scheduler/scheduler_config.json`` loaded into a
    ``DDPMScheduler``, as LaRE's official extraction code does. Every scheduler an SD pipeline
    ships (PNDM for v1.5, DDIM, Euler, ...) is a sampler for the same variance-preserving
    forward process, fixed by the config's betas; DDPM's ``add_noise`` applies that process
    exactly as the UNet saw it in training (``sqrt(a_t) x0 + sqrt(1 - a_t) eps``). Euler-type
    schedulers would instead add noise in sigma space and need ``scale_model_input``.
    ``prediction_type`` (epsilon / v_prediction) and zero-SNR rescaling carry over from the
    config.

    Raises :class:`~ldmdetect.generative.loading.ComponentLoadError` naming the component
    when one cannot be loaded (missing subfolder, hub unreachable, ...).
    """
    return load_sd_components_from(
        pipeline_sources(source, names, revision=revision), device=device, dtype=dtype
    )


def pipeline_sources(
    pipeline: str | os.PathLike, names: Sequence[str], *, revision: str | None = None
) -> dict[str, dict[str, Any]]:
    """{name: ComponentSource dict} for the named subfolders of one pipeline, as a detector
    config records them (like ``model_index.json``)."""
    source_id = os.fspath(pipeline)
    return {
        name: ComponentSource(source_id, subfolder=name, revision=revision).to_dict()
        for name in dict.fromkeys(names)
    }


def load_sd_components_from(
    sources: Mapping[str, Mapping[str, Any]],
    *,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | None = None,
) -> SDComponents:
    """Load components from their recorded sources ({name: ComponentSource dict}), as a
    detector config names them; components may come from different pipelines."""
    unknown = [n for n in sources if n not in _CLASSES]
    if unknown:
        raise ValueError(f"unknown component names {unknown}; choose from {list(COMPONENT_NAMES)}")
    device = resolve_device(device)
    components = SDComponents()
    for name, recorded in sources.items():
        component_source = ComponentSource.from_dict(dict(recorded))
        loaded = load_component(_CLASSES[name], component_source, device=device, dtype=dtype)
        setattr(components, name, loaded)
        components.sources[name] = component_source.to_dict()
    return components


def vae_scale_factor(source: Mapping[str, Any]) -> int:
    """Pixels per latent cell of the VAE at ``source`` (a ComponentSource dict), read from its
    config alone, without loading weights."""
    config = _load_vae_config(ComponentSource.from_dict(dict(source)))
    return 2 ** (len(config["block_out_channels"]) - 1)


def _load_vae_config(source: ComponentSource) -> dict[str, Any]:
    try:
        return AutoencoderKL.load_config(source.location, **source.hub_kwargs())
    except (OSError, ValueError) as err:
        raise source.error("the VAE config", err) from err
