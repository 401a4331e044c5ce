"""The parts of a generator pipeline that feature extractors drive by hand.

LaRE, DIRE-style inversion and AEROBLADE call the VAE, the denoiser and the noise schedule
directly rather than through the diffusers pipeline: they need one forward pass at a chosen
noise level, not a sampling loop. :func:`load_sd_components` loads exactly the components a
method asks for, from a pipeline of any supported family (SD 1/2, SDXL, SD3, FLUX.1; see
:mod:`~ldmdetect.generative.families`), through
:func:`~ldmdetect.generative.loading.load_component` (one device and dtype policy, one error
type), and records where each came from so a detector config can name them.

:class:`SDComponents` then speaks each family's conditioning (:meth:`SDComponents.condition`)
and runs its denoiser (:meth:`SDComponents.predict`) behind one call, so a feature extractor
is written once for every family.
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

from ldmdetect.generative.autoencoder import autoencoder_scale_factor
from ldmdetect.generative.families import (
    PIXEL_PIPELINES,
    ROLES,
    Family,
    family_for_pipeline_class,
    family_of_sources,
    get_family,
    pipeline_family,
    present_components,
    read_model_index,
)
from ldmdetect.generative.loading import (
    ComponentSource,
    load_component,
    resolve_device,
)

COMPONENT_NAMES: tuple[str, ...] = ROLES

# FLUX.1-dev's guidance embedding: the value its pipeline uses by default (guidance_scale 3.5).
FLUX_GUIDANCE = 3.5

# Prompt embeddings kept per instance. Class-name prompts repeat across a whole dataset and stay
# cached; per-image captions rarely repeat, so the cache is bounded (LRU) instead of growing by
# one 77 x dim tensor per image.
PROMPT_CACHE_SIZE = 1024


@dataclass(frozen=True)
class Conditioning:
    """What a family's denoiser is conditioned on, one row per prompt.

    ``hidden``: (B, seq, dim) text tokens (``encoder_hidden_states``); ``pooled``: (B, dim)
    pooled text embedding (SDXL's ``text_embeds``, SD3/FLUX's ``pooled_projections``) or None
    for SD 1/2.
    """

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None

    def repeat_interleave(self, repeats: int) -> Conditioning:
        """Each row ``repeats`` times in a row (an ensemble of draws per image)."""
        pooled = None if self.pooled is None else self.pooled.repeat_interleave(repeats, dim=0)
        return Conditioning(self.hidden.repeat_interleave(repeats, dim=0), pooled)

    def cat(self, other: Conditioning) -> Conditioning:
        """Rows of ``self`` then of ``other`` (e.g. unconditional and conditional)."""
        pooled = None if self.pooled is None else torch.cat([self.pooled, other.pooled])
        return Conditioning(torch.cat([self.hidden, other.hidden]), pooled)

    def expand(self, rows: int) -> Conditioning:
        """A one-row conditioning broadcast to ``rows`` rows."""
        pooled = None if self.pooled is None else self.pooled.expand(rows, -1)
        return Conditioning(self.hidden.expand(rows, -1, -1), pooled)

    def to(self, device: torch.device, dtype: torch.dtype) -> Conditioning:
        pooled = None if self.pooled is None else self.pooled.to(device=device, dtype=dtype)
        return Conditioning(self.hidden.to(device=device, dtype=dtype), pooled)


@dataclass
class SDComponents:
    """Components of one generator pipeline; each is None when it was not requested.

    ``family`` (sd, sdxl, sd3, flux) says which subfolders exist and how they are driven:
    ``unet`` for the SD families, ``transformer`` for the flow families; ``text_encoder_2``,
    ``tokenizer_2`` from SDXL on, ``text_encoder_3`` / ``tokenizer_3`` for SD3's optional T5.

    ``scheduler`` is the forward (noising) process. For the SD families it is a
    ``DDPMScheduler`` built from the pipeline's own scheduler config, so ``add_noise`` /
    ``get_velocity`` use the pipeline's betas and ``config.prediction_type`` says what the
    UNet predicts. For the flow families it is the pipeline's
    ``FlowMatchEulerDiscreteScheduler``: x_s = (1 - s) x_0 + s e, velocity e - x_0.
    ``sources`` maps each loaded component's name to ``ComponentSource.to_dict()``.
    """

    vae: AutoencoderKL | None = None
    unet: UNet2DConditionModel | None = None
    text_encoder: CLIPTextModel | None = None
    tokenizer: CLIPTokenizer | None = None
    scheduler: DDPMScheduler | None = None
    transformer: torch.nn.Module | None = None
    text_encoder_2: torch.nn.Module | None = None
    tokenizer_2: Any = None
    text_encoder_3: torch.nn.Module | None = None
    tokenizer_3: Any = None
    family: str = "sd"
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    _prompt_cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )

    @property
    def spec(self) -> Family:
        """This pipeline's :class:`~ldmdetect.generative.families.Family`."""
        return get_family(self.family)

    @property
    def denoiser(self) -> torch.nn.Module | None:
        """The UNet (SD, SDXL) or the transformer (SD3, FLUX)."""
        return self.transformer if self.spec.flow_matching else self.unet

    def _first_model(self) -> torch.nn.Module:
        """A loaded model: they are loaded together, so its device and dtype are all of theirs."""
        models = self._models()
        if not models:
            raise ValueError("no model component (vae, unet, text_encoder) is loaded")
        return models[0]

    def _models(self) -> list[torch.nn.Module]:
        models = (
            self.unet,
            self.transformer,
            self.vae,
            self.text_encoder,
            self.text_encoder_2,
            self.text_encoder_3,
        )
        return [m for m in models if m is not None]

    @property
    def device(self) -> torch.device:
        """The device of the loaded models (they are loaded together, so they share it)."""
        return self._first_model().device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the models run in (float32 on CPU, bf16/fp16 on GPU by default)."""
        return self._first_model().dtype

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """(len(prompts), seq, dim) text tokens, the denoiser's ``encoder_hidden_states``.

        The hidden half of :meth:`condition`; for SD 1/2 all of it.
        """
        return self.condition(prompts).hidden

    def condition(self, prompts: Sequence[str]) -> Conditioning:
        """The family's conditioning of each prompt, encoded as its diffusers pipeline does.

        - SD 1/2: the CLIP encoder's last hidden state, padded to 77 tokens.
        - SDXL: both encoders' penultimate hidden states side by side; pooled: the second
          (projecting) encoder's ``text_embeds``.
        - SD3: both CLIP encoders' penultimate states side by side, zero-padded to the T5
          width, then the T5 tokens (256; zeros without T5) after them; pooled: both CLIP
          ``text_embeds`` side by side.
        - FLUX: the T5 tokens (512); pooled: CLIP's pooled output.

        Each distinct prompt runs through the encoders once per instance: prompts not yet
        cached go through in one batch, and repeats are copies. Returned on the components'
        device in the first text encoder's dtype.
        """
        if self.tokenizer is None or self.text_encoder is None:
            raise ValueError("encode_prompts needs the tokenizer and text_encoder components")
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not a single string")
        prompts = list(prompts)
        if not prompts:
            hidden, pooled = self._run_text_encoders([""])
            empty = Conditioning(hidden[:0], None if pooled is None else pooled[:0])
            return empty
        missing = list(dict.fromkeys(p for p in prompts if p not in self._prompt_cache))
        if missing:
            hidden, pooled = self._run_text_encoders(missing)
            for i, prompt in enumerate(missing):
                # Copies, so that evicting one prompt frees its memory.
                row_pooled = None if pooled is None else pooled[i].clone()
                self._prompt_cache[prompt] = (hidden[i].clone(), row_pooled)
        for prompt in dict.fromkeys(prompts):
            self._prompt_cache.move_to_end(prompt)
        rows = [self._prompt_cache[p] for p in prompts]
        result = Conditioning(
            torch.stack([h for h, _ in rows]),
            None if rows[0][1] is None else torch.stack([p for _, p in rows]),
        )
        while len(self._prompt_cache) > PROMPT_CACHE_SIZE:
            self._prompt_cache.popitem(last=False)
        return result

    def _tokens(self, tokenizer: Any, prompts: list[str], length: int) -> Any:
        return tokenizer(
            prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        )

    def _clip(self, index: int, prompts: list[str]) -> Any:
        encoder = (self.text_encoder, self.text_encoder_2)[index]
        tokenizer = (self.tokenizer, self.tokenizer_2)[index]
        if encoder is None or tokenizer is None:
            names = (
                ("text_encoder", "tokenizer") if index == 0 else ("text_encoder_2", "tokenizer_2")
            )
            raise ValueError(f"the {self.family} family needs the {' and '.join(names)} components")
        tokens = self._tokens(tokenizer, prompts, tokenizer.model_max_length)
        return encoder(tokens.input_ids.to(encoder.device), output_hidden_states=True)

    def _t5(self, encoder: Any, tokenizer: Any, prompts: list[str]) -> torch.Tensor:
        tokens = self._tokens(tokenizer, prompts, self.spec.text_length)
        return encoder(tokens.input_ids.to(encoder.device))[0]

    @torch.inference_mode()
    def _run_text_encoders(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert self.tokenizer is not None and self.text_encoder is not None
        family, dtype = self.family, self.text_encoder.dtype
        if family == "sd":
            tokens = self._tokens(self.tokenizer, prompts, self.tokenizer.model_max_length)
            device = self.text_encoder.device
            # SD's pipeline passes the attention mask only to encoders configured to use one;
            # the CLIP encoders of SD 1.x/2.x attend over the padding, and their UNets were
            # trained so.
            mask = None
            if getattr(self.text_encoder.config, "use_attention_mask", False):
                mask = tokens.attention_mask.to(device)
            return self.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0], None
        if family == "sdxl":
            first, second = self._clip(0, prompts), self._clip(1, prompts)
            hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2].to(dtype)], -1)
            return hidden, second.text_embeds.to(dtype)
        if family == "sd3":
            first, second = self._clip(0, prompts), self._clip(1, prompts)
            clip = torch.cat([first.hidden_states[-2], second.hidden_states[-2].to(dtype)], -1)
            pooled = torch.cat([first.text_embeds, second.text_embeds.to(dtype)], -1)
            if self.text_encoder_3 is not None and self.tokenizer_3 is not None:
                t5 = self._t5(self.text_encoder_3, self.tokenizer_3, prompts).to(dtype)
            else:
                if self.transformer is None:
                    raise ValueError("SD3 without T5 needs the transformer (its text width)")
                width = self.transformer.config.joint_attention_dim
                t5 = clip.new_zeros(len(prompts), self.spec.text_length, width)
            clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
            return torch.cat([clip, t5], dim=-2), pooled
        # flux: CLIP gives only its pooled output; the tokens are T5's.
        if self.text_encoder_2 is None or self.tokenizer_2 is None:
            raise ValueError("the flux family needs the text_encoder_2 and tokenizer_2 components")
        pooled = self._clip(0, prompts).pooler_output
        hidden = self._t5(self.text_encoder_2, self.tokenizer_2, prompts).to(dtype)
        return hidden, pooled

    def predict(
        self, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        """The denoiser's output (float32, the latents' shape) for (B, C, h, w) latents.

        ``timesteps`` (B,) are on the scheduler's scale: DDPM steps 0..999 for the UNet
        families; for the flow families 1000 x the noise level s (what the SD3 pipeline
        passes; FLUX's transformer takes s itself, and gets it). The output is what the
        model predicts: noise (or v) for the UNets, the velocity e - x_0 for the flow
        transformers. FLUX's 2x2 packing, position ids and guidance embedding
        (:data:`FLUX_GUIDANCE`), and SDXL's ``time_ids`` (the latents' pixel size, no crop),
        are supplied here, as the pipelines supply them.
        """
        model = self.denoiser
        if model is None:
            raise ValueError(f"the {self.family} family needs its {self.spec.denoiser} component")
        dtype, device = model.dtype, model.device
        cond = conditioning.to(device, dtype)
        x = latents.to(device=device, dtype=dtype)
        batch, channels, height, width = x.shape
        if self.family == "sd":
            return model(x, timesteps, encoder_hidden_states=cond.hidden).sample.float()
        if self.family == "sdxl":
            factor = autoencoder_scale_factor(self.vae) if self.vae else 8
            size = [height * factor, width * factor]
            time_ids = torch.tensor([[*size, 0, 0, *size]], device=device, dtype=dtype)
            added = {"text_embeds": cond.pooled, "time_ids": time_ids.expand(batch, -1)}
            return model(
                x, timesteps, encoder_hidden_states=cond.hidden, added_cond_kwargs=added
            ).sample.float()
        t = timesteps.to(device=device, dtype=dtype).expand(batch)
        if self.family == "sd3":
            return model(
                hidden_states=x,
                timestep=t,
                encoder_hidden_states=cond.hidden,
                pooled_projections=cond.pooled,
            ).sample.float()
        packed = pack_latents(x)
        guidance = None
        if model.config.guidance_embeds:
            guidance = torch.full((batch,), FLUX_GUIDANCE, device=device, dtype=torch.float32)
        out = model(
            hidden_states=packed,
            timestep=t / 1000,
            guidance=guidance,
            pooled_projections=cond.pooled,
            encoder_hidden_states=cond.hidden,
            txt_ids=torch.zeros(cond.hidden.shape[1], 3, device=device, dtype=dtype),
            img_ids=latent_image_ids(height, width, device=device, dtype=dtype),
        ).sample
        return unpack_latents(out.float(), channels, height, width)


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): FLUX's tokens, one per 2x2 patch, row-major."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"FLUX packs 2x2 latent patches; latent size {h}x{w} is odd")
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`pack_latents`: (B, h/2 * w/2, 4C) -> (B, C, h, w)."""
    b = tokens.shape[0]
    x = tokens.view(b, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels, height, width)


def latent_image_ids(
    height: int, width: int, *, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """FLUX's image position ids (h/2 * w/2, 3): (0, row, column) of each packed patch."""
    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 1] = torch.arange(height // 2)[:, None]
    ids[..., 2] = torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def load_sd_components(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | None = None,
    names: Sequence[str] = COMPONENT_NAMES,
) -> SDComponents:
    """Load the named components of a pipeline of any family (hub id or local directory).

    ``names`` are SD's (``unet``, ``text_encoder`` ...) or the family's own subfolders; the
    family (from ``model_index.json``) turns them into its subfolders (see
    :func:`pipeline_sources`). Models come back frozen, in eval mode, on ``device`` in
    ``dtype`` (default: float32 on CPU, bf16 on GPUs that have it; see
    :func:`~ldmdetect.generative.loading.default_dtype`).

    For the SD families the scheduler is the pipeline's own
    ``scheduler/scheduler_config.json`` loaded into a ``DDPMScheduler``, as LaRE's official
    extraction code does. Every scheduler an SD pipeline ships (PNDM for v1.5, DDIM, Euler,
    ...) is a sampler for the same variance-preserving forward process, fixed by the config's
    betas; DDPM's ``add_noise`` applies that process exactly as the UNet saw it in training
    (``sqrt(a_t) x0 + sqrt(1 - a_t) eps``). Euler-type schedulers would instead add noise in
    sigma space and need ``scale_model_input``. ``prediction_type`` (epsilon / v_prediction)
    and zero-SNR rescaling carry over from the config. The flow families keep their
    ``FlowMatchEulerDiscreteScheduler``.

    Raises :class:`~ldmdetect.generative.loading.ComponentLoadError` naming the component
    when one cannot be loaded (missing subfolder, hub unreachable, ...), and
    :class:`~ldmdetect.generative.families.UnsupportedFamily` for a pipeline class that is
    none of the four families.
    """
    sources = pipeline_sources(source, names, revision=revision)
    family = None
    if any(name != "vae" for name in names):
        family = pipeline_family(source, revision=revision).name
    return load_sd_components_from(sources, device=device, dtype=dtype, family=family)


def pipeline_sources(
    pipeline: str | os.PathLike, names: Sequence[str], *, revision: str | None = None
) -> dict[str, dict[str, Any]]:
    """{subfolder: ComponentSource dict} for the named components of one pipeline, as a
    detector config records them (like ``model_index.json``).

    ``names`` are roles in SD's names; the pipeline's family (its ``model_index.json``) maps
    them to its subfolders: ``unet`` -> ``transformer`` for SD3/FLUX, ``text_encoder`` and
    ``tokenizer`` -> every text encoder and tokenizer the pipeline has. An autoencoder alone
    needs no family (any family's ``vae`` is an ``AutoencoderKL``), so the pipeline is then
    not read.
    """
    source_id = os.fspath(pipeline)
    names = list(dict.fromkeys(names))
    if any(name != "vae" for name in names):
        index = read_model_index(source_id, revision=revision)
        # A pixel-space pipeline has no family to expand names with; its components are
        # recorded as named, and only the methods that drive it (DIRE) accept them.
        if index["_class_name"] not in PIXEL_PIPELINES:
            family = family_for_pipeline_class(index["_class_name"])
            names = family.subfolders(names, present_components(index))
    return {
        name: ComponentSource(source_id, subfolder=name, revision=revision).to_dict()
        for name in names
    }


def pipeline_override(
    pipeline: str | os.PathLike | None, names: Sequence[str]
) -> dict[str, dict[str, Any]] | None:
    """The sources of a method's generator components (``names``) when they are to be read
    from ``pipeline`` instead of where the detector's config records them: a local copy of a
    hub pipeline, or the same weights moved. None when no pipeline is given or the method
    drives no generator component, so the recorded sources stand.
    """
    if pipeline is None or not names:
        return None
    return pipeline_sources(pipeline, names)


def load_sd_components_from(
    sources: Mapping[str, Mapping[str, Any]],
    *,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | None = None,
    family: str | None = None,
) -> SDComponents:
    """Load components from their recorded sources ({subfolder: ComponentSource dict}), as a
    detector config names them; components may come from different pipelines.

    ``family`` None reads it from the denoiser's config
    (:func:`~ldmdetect.generative.families.family_of_sources`).
    """
    spec = get_family(family) if family else family_of_sources(sources)
    unknown = [n for n in sources if n not in spec.classes]
    if unknown:
        raise ValueError(
            f"unknown component names {unknown} for the {spec.name} family; "
            f"choose from {sorted(spec.classes)}"
        )
    device = resolve_device(device)
    components = SDComponents(family=spec.name)
    for name, recorded in sources.items():
        component_source = ComponentSource.from_dict(dict(recorded))
        loaded = load_component(spec.classes[name], component_source, device=device, dtype=dtype)
        setattr(components, name, loaded)
        components.sources[name] = component_source.to_dict()
    return components


def vae_scale_factor(source: Mapping[str, Any]) -> int:
    """Pixels per latent cell of the VAE at ``source`` (a ComponentSource dict), read from its
    config alone, without loading weights."""
    config = _load_vae_config(ComponentSource.from_dict(dict(source)))
    return 2 ** (len(config["block_out_channels"]) - 1)


def vae_latent_channels(source: Mapping[str, Any]) -> int:
    """Latent channels of the VAE at ``source`` (4 for SD/SDXL, 16 for SD3/FLUX), read from
    its config alone."""
    return int(_load_vae_config(ComponentSource.from_dict(dict(source)))["latent_channels"])


def _load_vae_config(source: ComponentSource) -> dict[str, Any]:
    try:
        return AutoencoderKL.load_config(source.location, **source.hub_kwargs())
    except (OSError, ValueError) as err:
        raise source.error("the VAE config", err) from err
