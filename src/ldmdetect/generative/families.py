"""Generator families: which components a pipeline has, which class loads each, and how its
denoiser is driven.

A pipeline's family is the ``_class_name`` of its ``model_index.json``, the same key diffusers
uses to pick the pipeline class:

- ``sd`` (``StableDiffusionPipeline``, SD 1.x/2.x): a UNet, one CLIP text encoder, a DDPM
  noise schedule (epsilon or v prediction), a 4-channel VAE.
- ``sdxl`` (``StableDiffusionXLPipeline``): the same kinds of parts, plus a second, projecting
  CLIP encoder whose pooled output and the image's size/crop ``time_ids`` condition the UNet.
- ``sd3`` (``StableDiffusion3Pipeline``, SD 3/3.5): an MMDiT transformer, two projecting CLIP
  encoders and an optional T5, rectified flow, a 16-channel VAE with a shift.
- ``flux`` (``FluxPipeline``, FLUX.1): a transformer on 2x2-packed latents, CLIP (pooled only)
  and T5, rectified flow with a resolution-dependent shift, a guidance embedding (dev).

Methods name the components they need by the SD names (``vae``, ``unet``, ``text_encoder``,
``tokenizer``, ``scheduler``); :meth:`Family.subfolders` turns those roles into the family's
subfolders (``unet`` -> ``transformer``, ``text_encoder`` -> every text encoder ...), which
is what a detector config records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5EncoderModel,
    T5TokenizerFast,
)

from ldmdetect.generative.loading import ComponentLoadError, ComponentSource
from ldmdetect.io.hub import resolve_directory

# Roles a method may ask for, in SD's names.
ROLES: tuple[str, ...] = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")


class UnsupportedFamily(ValueError):
    """A pipeline class, or a (family, method) pair, that ldmdetect cannot drive."""


@dataclass(frozen=True)
class Family:
    """One generator family: its pipeline class, its subfolders and how each loads.

    ``classes`` maps every subfolder to the class it is loaded with; the scheduler of the
    UNet families is always DDPM (the forward process the UNet was trained on, whatever
    sampler the pipeline ships), of the flow families flow-matching Euler.
    ``optional`` subfolders (SD3's T5) may be absent or null in ``model_index.json``.
    ``text_length`` is the T5 prompt length the pipeline pads to (its default).
    """

    name: str
    pipeline: str
    denoiser: str
    text_encoders: tuple[str, ...]
    tokenizers: tuple[str, ...]
    classes: Mapping[str, type]
    flow_matching: bool = False
    optional: tuple[str, ...] = ()
    text_length: int = 0

    def subfolders(self, roles: Sequence[str], present: Sequence[str] | None = None) -> list[str]:
        """The subfolders behind ``roles`` (SD names; real subfolder names pass through),
        leaving out optional ones not in ``present`` (the pipeline's non-null entries)."""
        out: list[str] = []
        for role in roles:
            if role == "unet":
                names: Sequence[str] = (self.denoiser,)
            elif role == "text_encoder":
                names = self.text_encoders
            elif role == "tokenizer":
                names = self.tokenizers
            else:
                names = (role,)
            for name in names:
                if name not in self.classes:
                    raise ValueError(
                        f"unknown component {name!r} for the {self.name} family; "
                        f"choose from {sorted(self.classes)}"
                    )
                if name in self.optional and present is not None and name not in present:
                    continue
                out.append(name)
        return list(dict.fromkeys(out))

    def pipeline_class(self) -> type:
        """diffusers' pipeline class of this family (``StableDiffusionXLPipeline`` ...)."""
        import diffusers

        return getattr(diffusers, self.pipeline)


def _numbered(role: str, classes: Sequence[type]) -> dict[str, type]:
    """The components of one role under diffusers' subfolder names: ``text_encoder``,
    ``text_encoder_2`` ..."""
    return {role if i == 0 else f"{role}_{i + 1}": cls for i, cls in enumerate(classes)}


def _family(
    name: str,
    pipeline: str,
    denoiser: tuple[str, type],
    text_encoders: Sequence[type],
    tokenizers: Sequence[type],
    **options: Any,
) -> Family:
    """A family laid out as diffusers lays its pipelines out: numbered text encoders and
    tokenizers, the SD autoencoder class, and the scheduler its denoiser was trained with
    (DDPM, or flow-matching Euler for the ``flow_matching`` families)."""
    encoders = _numbered("text_encoder", text_encoders)
    tokens = _numbered("tokenizer", tokenizers)
    flow = options.get("flow_matching", False)
    scheduler = FlowMatchEulerDiscreteScheduler if flow else DDPMScheduler
    return Family(
        name=name,
        pipeline=pipeline,
        denoiser=denoiser[0],
        text_encoders=tuple(encoders),
        tokenizers=tuple(tokens),
        classes={
            **tokens,
            "vae": AutoencoderKL,
            denoiser[0]: denoiser[1],
            **encoders,
            "scheduler": scheduler,
        },
        **options,
    )


FAMILIES: dict[str, Family] = {
    "sd": _family(
        "sd",
        "StableDiffusionPipeline",
        ("unet", UNet2DConditionModel),
        (CLIPTextModel,),
        (CLIPTokenizer,),
    ),
    "sdxl": _family(
        "sdxl",
        "StableDiffusionXLPipeline",
        ("unet", UNet2DConditionModel),
        (CLIPTextModel, CLIPTextModelWithProjection),
        (CLIPTokenizer, CLIPTokenizer),
    ),
    "sd3": _family(
        "sd3",
        "StableDiffusion3Pipeline",
        ("transformer", SD3Transformer2DModel),
        (CLIPTextModelWithProjection, CLIPTextModelWithProjection, T5EncoderModel),
        (CLIPTokenizer, CLIPTokenizer, T5TokenizerFast),
        flow_matching=True,
        optional=("text_encoder_3", "tokenizer_3"),
        text_length=256,
    ),
    "flux": _family(
        "flux",
        "FluxPipeline",
        ("transformer", FluxTransformer2DModel),
        (CLIPTextModel, T5EncoderModel),
        (CLIPTokenizer, T5TokenizerFast),
        flow_matching=True,
        text_length=512,
    ),
}
_BY_PIPELINE = {family.pipeline: family for family in FAMILIES.values()}

#: Unconditional pixel-space pipelines (ADM-like ``UNet2DModel`` + scheduler): no family, but
#: DIRE, the paper's setting, drives them.
PIXEL_PIPELINES: tuple[str, ...] = ("DDPMPipeline", "DDIMPipeline")


def family_for_pipeline_class(class_name: str) -> Family:
    """The family whose pipeline class is ``class_name``; any other class is refused."""
    if class_name not in _BY_PIPELINE:
        raise UnsupportedFamily(
            f"unsupported generator pipeline class {class_name!r}; ldmdetect drives "
            f"{', '.join(_BY_PIPELINE)}"
        )
    return _BY_PIPELINE[class_name]


def get_family(name: str) -> Family:
    """The family named ``name`` (sd, sdxl, sd3, flux)."""
    if name not in FAMILIES:
        raise UnsupportedFamily(
            f"unknown generator family {name!r}; choose from {', '.join(FAMILIES)}"
        )
    return FAMILIES[name]


def read_model_index(source: str | os.PathLike, *, revision: str | None = None) -> dict[str, Any]:
    """A pipeline's ``model_index.json`` (hub id or directory), as a dict."""
    root = resolve_directory(
        source,
        what="model_index.json",
        revision=revision,
        allow_patterns=["model_index.json"],
        error=ComponentLoadError,
    )
    path = Path(root) / "model_index.json"
    if not path.is_file():
        raise ComponentSource(os.fspath(source), revision=revision).error(
            "model_index.json",
            "there is no model_index.json",
            fix="Pass a diffusers pipeline directory (the one save_pretrained writes).",
        )
    try:
        index = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise ValueError(f"{path}: no '_class_name' naming the pipeline class")
    return index


def pipeline_family(source: str | os.PathLike, *, revision: str | None = None) -> Family:
    """The family of the pipeline at ``source``, from its ``model_index.json``."""
    return family_for_pipeline_class(read_model_index(source, revision=revision)["_class_name"])


def present_components(index: Mapping[str, Any]) -> list[str]:
    """Subfolders a ``model_index.json`` fills (entries that are not ``[null, null]``)."""
    return [
        name
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and value and value[0] is not None
    ]


def denoiser_name(sources: Mapping[str, Any]) -> str | None:
    """Which recorded component is the denoiser: ``unet``, ``transformer`` or None."""
    for name in ("unet", "transformer"):
        if name in sources:
            return name
    return None


def family_of_sources(sources: Mapping[str, Mapping[str, Any]]) -> Family:
    """The family of recorded component sources ({name: ComponentSource dict}), from the
    denoiser's own config: recorded components may come from different pipelines, and the
    denoiser is the one whose conventions (conditioning, schedule) everything follows.

    Without a denoiser (an autoencoder alone) the family does not matter: ``sd``.
    """
    name = denoiser_name(sources)
    if name is None:
        return FAMILIES["sd"]
    source = ComponentSource.from_dict(dict(sources[name]))
    try:
        config = UNet2DConditionModel.load_config(source.location, **source.hub_kwargs())
    except (OSError, ValueError) as err:
        raise source.error(f"the {name} config", err) from err
    class_name = config.get("_class_name")
    if class_name == "UNet2DConditionModel":
        return FAMILIES["sdxl" if config.get("addition_embed_type") == "text_time" else "sd"]
    for family in FAMILIES.values():
        if family.classes.get(family.denoiser).__name__ == class_name:
            return family
    raise UnsupportedFamily(
        f"unsupported denoiser class {class_name!r} at {source}; ldmdetect drives "
        "UNet2DConditionModel, SD3Transformer2DModel and FluxTransformer2DModel"
    )


def refuse(family: Family, method: str, why: str) -> UnsupportedFamily:
    """The one-line error for a method that cannot run on a family."""
    return UnsupportedFamily(f"method {method!r} cannot run on the {family.name} family: {why}")


def method_family(sources: Mapping[str, Mapping[str, Any]], method: str) -> Family:
    """:func:`family_of_sources` for ``method``, whose refusal names the method too."""
    try:
        return family_of_sources(sources)
    except UnsupportedFamily as err:
        raise UnsupportedFamily(f"method {method!r} cannot run on this generator: {err}") from None
