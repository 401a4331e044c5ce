"""Load generator components (VAE, UNet, text encoder, tokenizer, scheduler) from a hub id or a
local directory, with one device/dtype policy and one kind of error.

The hub libraries fail in many shapes when a component is missing or the hub is unreachable
(OSError, HTTP errors, validation errors, and for transformers-5 tokenizers no error at all);
everything here turns those into a :class:`ComponentLoadError` that says what to do next.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
from huggingface_hub.errors import EntryNotFoundError
from packaging.version import Version

from ldmdetect.io.hub import (
    SourceUnavailable,
    hub_kwargs,
    is_local_source,
    location,
    source_error,
)


class ComponentLoadError(SourceUnavailable):
    """A generator component could not be loaded; the message names the source and the fix."""


@dataclass(frozen=True)
class ComponentSource:
    """Where one component comes from: a hub id or a local path, plus subfolder and revision.

    Detector configs store this (``to_dict``) so that a detector names the exact generator
    components its features were computed with.
    """

    id: str
    subfolder: str | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        # Accept Path objects for convenience, but store a plain string so configs serialise.
        object.__setattr__(self, "id", os.fspath(self.id))

    @property
    def is_local(self) -> bool:
        """True when ``id`` is a filesystem path rather than a hub repo id
        (:func:`ldmdetect.io.hub.is_local_source`)."""
        return is_local_source(self.id)

    @property
    def location(self) -> str:
        """What ``from_pretrained`` is given: the expanded local path, or the hub id."""
        return location(self.id)

    def hub_kwargs(self) -> dict[str, Any]:
        """``subfolder``, ``revision`` and offline-mode keywords for ``from_pretrained``."""
        kwargs = {"revision": self.revision} if self.revision else {}
        if not self.is_local:
            kwargs |= hub_kwargs(self.revision)
        if self.subfolder:
            kwargs["subfolder"] = self.subfolder
        return kwargs

    def error(
        self, what: str, reason: str | BaseException, *, fix: str | None = None
    ) -> ComponentLoadError:
        """The one-line :class:`ComponentLoadError` for ``what`` (e.g. a class name) from this
        source (see :func:`ldmdetect.io.hub.source_error`)."""
        return source_error(
            what + self._extras(), self.id, reason, fix=fix, error=ComponentLoadError
        )  # type: ignore[return-value]

    def _extras(self) -> str:
        extras = [
            f"{k} '{v}'"
            for k, v in (("subfolder", self.subfolder), ("revision", self.revision))
            if v
        ]
        return f" ({', '.join(extras)})" if extras else ""

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ComponentSource:
        unknown = set(d) - {"id", "subfolder", "revision"}
        if unknown:
            # A typo in a saved config must not silently load a different component.
            raise ValueError(
                f"unknown ComponentSource keys {sorted(unknown)}; expected id, subfolder, revision"
            )
        return cls(id=d["id"], subfolder=d.get("subfolder"), revision=d.get("revision"))

    def __str__(self) -> str:
        return f"'{self.id}'" + self._extras()


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> cuda when available, else cpu; an explicit cuda without CUDA raises.

    Raising here beats a late, obscure CUDA error from the first ``.to()`` deep in a model.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device '{device}' was requested but CUDA is not available; use device='cpu' or 'auto'"
        )
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """float32 on CPU; bf16 on GPUs that have it natively, else fp16.

    bf16 is preferred on GPU because SD autoencoders overflow to inf/NaN in fp16.
    """
    if device.type == "cuda":
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native_bf16 else torch.float16
    return torch.float32


def _dtype_kwargs(cls: type, dtype: torch.dtype | None) -> dict[str, torch.dtype]:
    if dtype is None:
        return {}
    # transformers 4.56 renamed ``torch_dtype`` to ``dtype`` (warning on the old name, while
    # older versions silently ignore the new one).
    if any(base.__module__.startswith("transformers.") for base in cls.__mro__):
        import transformers

        if Version(transformers.__version__) >= Version("4.56"):
            return {"dtype": dtype}
        return {"torch_dtype": dtype}
    # diffusers 0.42 likewise moved to ``dtype`` and deprecates ``torch_dtype``.
    if Version(diffusers.__version__) >= Version("0.42"):
        return {"dtype": dtype}
    return {"torch_dtype": dtype}


def _load_error(cls: type, source: ComponentSource, reason: str | BaseException):
    fix = None
    if source.is_local:
        fix = (
            "Pass the directory that holds the component's config (for a pipeline directory, "
            "also pass the component's subfolder, e.g. 'vae')."
        )
    return source.error(cls.__name__, reason, fix=fix)


def _check_local(cls: type, source: ComponentSource) -> None:
    root = Path(source.id).expanduser()
    if not root.is_dir():
        raise _load_error(cls, source, "no such directory")
    folder = root / source.subfolder if source.subfolder else root
    if not folder.is_dir():
        raise _load_error(cls, source, f"it has no subfolder '{source.subfolder}'")
    # diffusers builds whatever class it is asked for from any config, so pointing the VAE
    # loader at unet/ would fail deep inside a constructor; name the mix-up instead.
    config = folder / "config.json"
    if config.is_file():
        try:
            saved = json.loads(config.read_text()).get("_class_name")
        except (ValueError, AttributeError):
            saved = None
        saved_cls = getattr(diffusers, saved, None) if isinstance(saved, str) else None
        if (
            isinstance(saved_cls, type)
            and issubclass(cls, torch.nn.Module)
            and not issubclass(saved_cls, cls)
        ):
            raise _load_error(cls, source, f"its config is for {saved}, not {cls.__name__}")


def _is_empty_tokenizer(obj: Any) -> bool:
    # transformers 5 tokenizers built from missing files load without error as a vocabulary
    # of special tokens only, which would silently map every prompt to unknown tokens.
    special_ids = getattr(obj, "all_special_ids", None)
    return special_ids is not None and len(obj) <= len(set(special_ids))


def load_component(
    cls: type,
    source: ComponentSource,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Any:
    """``cls.from_pretrained(source)``; models come back on ``device``, in eval mode, frozen.

    Diffusers pipelines come back on ``device`` in ``dtype`` with their progress bar off.

    ``device`` None or "auto" means CUDA when available (see :func:`resolve_device`).
    Works for diffusers models and schedulers and transformers models and tokenizers. Models
    get ``dtype`` or :func:`default_dtype` of the device; nothing here trains generator
    components, so their gradients are switched off. A local directory never touches the hub.
    """
    kwargs: dict[str, Any] = source.hub_kwargs()
    is_model = isinstance(cls, type) and issubclass(cls, torch.nn.Module)
    is_pipeline = isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)
    if is_model or is_pipeline:
        device = resolve_device(device)
        kwargs.update(_dtype_kwargs(cls, dtype or default_dtype(device)))
    if source.is_local:
        _check_local(cls, source)
    try:
        obj = cls.from_pretrained(source.location, **kwargs)
    except (OSError, EntryNotFoundError, ValueError) as exc:
        # OSError covers EnvironmentError, offline-mode errors, missing local files and the
        # hub's HTTP errors; EntryNotFoundError comes straight from huggingface_hub; ValueError
        # covers invalid repo ids and configs that do not fit ``cls``.
        raise _load_error(cls, source, exc) from exc
    if _is_empty_tokenizer(obj):
        raise _load_error(cls, source, "no tokenizer files were found (got an empty vocabulary)")
    if is_model:
        obj = obj.to(device).eval().requires_grad_(False)
    if is_pipeline:
        obj = obj.to(device)
        obj.set_progress_bar_config(disable=True)
    return obj
