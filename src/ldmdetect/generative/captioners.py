"""Captions that condition generator features (FakeInversion's DDIM inversion, LaRE's UNet pass).

FakeInversion inverts each image with the prompt the generator would plausibly have been given,
so every image is captioned first. Three captioners, picked everywhere by one spec string
(:func:`parse_captioner`, the ``--captioner`` option):

- ``blip2[:ID_OR_DIR]``: BLIP-2 through transformers, ``Salesforce/blip2-opt-2.7b`` by default
  (the paper's), or any BLIP / BLIP-2 captioning checkpoint (hub id or local directory); greedy,
  at most 20 new tokens, batched;
- ``sidecar``: the prompt each sample already carries (``photo.txt`` beside ``photo.png``, else
  the prompt template filled with the class name, else ``""``), no model;
- ``fixed:TEXT``: the same text for every image, no model (e.g. ``fixed:a photo``).

A captioner is a callable ``(images, given) -> captions``: ``images`` uint8 (B, 3, H, W),
``given`` the samples' own prompts. Model-backed captioners load on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from ldmdetect.generative.loading import (
    ComponentLoadError,
    ComponentSource,
    load_component,
    resolve_device,
)

DEFAULT_BLIP2 = "Salesforce/blip2-opt-2.7b"
MAX_NEW_TOKENS = 20  # the paper's caption length budget


class Captioner:
    """Base class: ``captioner(images, given)`` -> one caption per image."""

    #: the spec string that builds this captioner again (recorded in configs and caches)
    spec: str

    def __call__(self, images: torch.Tensor, given: Sequence[str]) -> list[str]:
        raise NotImplementedError


@dataclass
class FixedCaptioner(Captioner):
    """The same caption for every image (``fixed:TEXT``; ``fixed:`` is the empty prompt)."""

    text: str = ""

    @property
    def spec(self) -> str:  # type: ignore[override]
        return f"fixed:{self.text}"

    def __call__(self, images: torch.Tensor, given: Sequence[str]) -> list[str]:
        return [self.text] * len(given)


@dataclass
class SidecarCaptioner(Captioner):
    """Each sample's own prompt: its sidecar ``.txt`` caption, else the prompt template with
    its class name, else ``""`` (see :func:`ldmdetect.io.prompts.resolve_prompt`)."""

    spec = "sidecar"

    def __call__(self, images: torch.Tensor, given: Sequence[str]) -> list[str]:
        return list(given)


def _model_classes(source: ComponentSource) -> tuple[type, type]:
    """(model class, processor class) for a BLIP or BLIP-2 checkpoint, from its config alone."""
    from transformers import (
        AutoConfig,
        AutoProcessor,
        Blip2ForConditionalGeneration,
        BlipForConditionalGeneration,
    )

    try:
        config = AutoConfig.from_pretrained(source.location, **source.hub_kwargs())
    except (OSError, ValueError) as err:
        raise _captioner_error(source, err) from err
    classes = {"blip-2": Blip2ForConditionalGeneration, "blip": BlipForConditionalGeneration}
    if config.model_type not in classes:
        raise ValueError(
            f"{source}: a {config.model_type!r} checkpoint, not a BLIP or BLIP-2 captioner"
        )
    return classes[config.model_type], AutoProcessor


def _captioner_error(source: ComponentSource, err: BaseException) -> ComponentLoadError:
    return source.error(
        "the captioner",
        err,
        fix="Pass a local BLIP-2 directory (--captioner blip2:DIR), or --captioner sidecar / "
        "fixed:TEXT, which need no model.",
    )


@dataclass
class Blip2Captioner(Captioner):
    """BLIP-2 (or BLIP) image captioning through transformers, greedy, batched.

    The model and its processor are loaded on the first call, on ``device`` in the device's
    default dtype (float32 on CPU, bf16/fp16 on GPU). ``prompt`` None captions from the image
    alone, as the paper does; a text prompt ("a photo of") is continued instead.
    """

    source: str = DEFAULT_BLIP2
    revision: str | None = None
    device: str | torch.device | None = "auto"
    max_new_tokens: int = MAX_NEW_TOKENS
    prompt: str | None = None
    _loaded: tuple[Any, Any] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def spec(self) -> str:  # type: ignore[override]
        return "blip2" if self.source == DEFAULT_BLIP2 else f"blip2:{self.source}"

    def load(self) -> tuple[Any, Any]:
        """(model, processor), loaded once."""
        if self._loaded is None:
            component = ComponentSource(self.source, revision=self.revision)
            model_cls, processor_cls = _model_classes(component)
            model = load_component(model_cls, component, device=resolve_device(self.device))
            try:
                processor = processor_cls.from_pretrained(
                    component.location, **component.hub_kwargs()
                )
            except (OSError, ValueError) as err:
                raise _captioner_error(component, err) from err
            self._loaded = (model, processor)
        return self._loaded

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, given: Sequence[str]) -> list[str]:
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"expected uint8 images (B, 3, H, W), got {tuple(images.shape)}")
        if len(images) == 0:
            return []
        model, processor = self.load()
        pil = [Image.fromarray(im.permute(1, 2, 0).cpu().numpy()) for im in images]
        kwargs: dict[str, Any] = {"images": pil, "return_tensors": "pt"}
        if self.prompt is not None:
            kwargs["text"] = [self.prompt] * len(pil)
        inputs = processor(**kwargs).to(model.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        ids = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        # Decoder-only language models return the prompt ids first; keep the new tokens only.
        if "input_ids" in inputs and ids.shape[1] > inputs["input_ids"].shape[1]:
            prefix = inputs["input_ids"].shape[1]
            if torch.equal(ids[:, :prefix], inputs["input_ids"]):
                ids = ids[:, prefix:]
        texts = processor.batch_decode(ids, skip_special_tokens=True)
        return [" ".join(text.split()) for text in texts]


def parse_captioner(
    spec: str | Captioner | None, *, device: str | torch.device | None = "auto"
) -> Captioner:
    """``blip2[:ID_OR_DIR] | sidecar | fixed:TEXT`` -> a captioner (models load on first use).

    None means the default, BLIP-2 OPT-2.7b. A :class:`Captioner` is returned as it is.
    """
    if isinstance(spec, Captioner):
        return spec
    if spec is None:
        spec = "blip2"
    kind, sep, argument = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "fixed":
        if not sep:
            raise ValueError("captioner 'fixed' needs its text: fixed:TEXT (e.g. 'fixed:a photo')")
        return FixedCaptioner(argument)
    if kind == "sidecar" and not argument:
        return SidecarCaptioner()
    if kind in ("blip2", "blip"):
        return Blip2Captioner(argument.strip() or DEFAULT_BLIP2, device=device)
    raise ValueError(f"unknown captioner {spec!r}; use blip2[:ID_OR_DIR], sidecar or fixed:TEXT")
