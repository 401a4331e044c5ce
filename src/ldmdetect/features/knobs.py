"""The frozen settings ("knobs") of a feature extractor, written as a dataclass of plain values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Knobs:
    """A feature's settings: checked against :attr:`minimums` when made, so a bad value fails
    where it is given rather than deep inside a UNet pass, and written out by :meth:`to_dict`
    into a detector's config."""

    #: {field: the least value it may take}.
    minimums: ClassVar[Mapping[str, float]] = {}

    def __post_init__(self) -> None:
        for name, least in self.minimums.items():
            value = getattr(self, name)
            if value < least:
                raise ValueError(f"{name} must be at least {least:g}, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
