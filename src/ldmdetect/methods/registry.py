"""The method registry: the one place that binds a feature extractor to a model.

Each method says how an image becomes model input (``prepare``, run in loader workers on CPU)
and how a batch becomes logits (``logits``, run on the device, where any generator machinery
such as a UNet pass would go). Everything else (training loop, scanning, evaluation) is shared.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from typing import ClassVar, TypeVar

import torch
from PIL import Image
from torch import nn

from ldmdetect.config import DetectorConfig


class Method(ABC):
    """A detection method: preprocessing + features + model, behind one name."""

    name: ClassVar[str]
    summary: ClassVar[str]

    @abstractmethod
    def build_model(self, config: DetectorConfig, *, pretrained: bool | str = False) -> nn.Module:
        """A fresh model for ``config`` (weights are loaded by the caller)."""

    @abstractmethod
    def prepare(self, image: Image.Image, config: DetectorConfig, tries: int) -> torch.Tensor:
        """One RGB image -> uint8 tensor (tries, 3, S, S) of model-ready crops."""

    @abstractmethod
    def logits(self, model: nn.Module, batch: torch.Tensor, config: DetectorConfig) -> torch.Tensor:
        """uint8 batch (N, 3, S, S) on the model's device -> logits (N,)."""


_M = TypeVar("_M", bound=type[Method])
_REGISTRY: dict[str, type[Method]] = {}


def register_method(cls: _M) -> _M:
    """Class decorator: make a method available by its ``name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Method:
    """The method registered as ``name``; unknown names get close matches in the error."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown method {name!r}.{hint} Known methods: {', '.join(list_methods())}."
        )
    return _REGISTRY[name]()


def normalize(batch: torch.Tensor, config: DetectorConfig, dtype: torch.dtype) -> torch.Tensor:
    """uint8 images -> float ``dtype`` normalised with the detector's mean/std."""
    mean = torch.tensor(config.mean, device=batch.device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=batch.device, dtype=dtype).view(1, 3, 1, 1)
    return (batch.to(dtype) / 255.0 - mean) / std
