"""What a method starts from where the user names nothing: its backbone, input size, whether
its network starts pretrained, and its training recipe (optimizer, learning rate, weight decay,
gradient clipping), like timm's ``default_cfg``.

One frozen dataclass, so a misspelt key is an error where the method is defined instead of a
default silently not applied, and the training loop reads fields named as
:class:`~ldmdetect.engine.train_config.TrainConfig` names its overrides.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: The optimizers a recipe may name: torch's Adam (coupled L2, as LaRE's and DIRE's official
#: code) and AdamW (decoupled weight decay).
OPTIMIZERS = ("adamw", "adam")
#: The training recipe's fields, as the former ``default_config`` dict nested and named them
#: under ``training``.
_LEGACY_TRAINING = {
    "optimizer": "optimizer",
    "lr": "lr",
    "wd": "weight_decay",
    "grad_clip": "grad_clip",
}


@dataclass(frozen=True, kw_only=True)
class MethodDefaults:
    """A method's defaults (:attr:`Method.default_cfg`); every ``TrainConfig`` field of the
    same name that the user sets wins over it."""

    backbone: str = "tf_efficientnetv2_b0"
    input_size: int = 256
    #: Frozen networks (LPIPS' trunk, a foundation model) embed nothing useful untrained.
    pretrained: bool = False
    optimizer: Literal["adamw", "adam"] = "adamw"
    #: None: 1e-4 when starting from pretrained weights, 1e-3 from scratch.
    lr: float | None = None
    weight_decay: float = 0.05
    #: Gradient-norm clipping; 0 clips nothing.
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if int(self.input_size) < 1:
            raise ValueError(f"input_size must be >= 1, got {self.input_size}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0 (or None), got {self.lr}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(
                f"weight_decay and grad_clip must be >= 0, got {self.weight_decay}, "
                f"{self.grad_clip}"
            )

    def learning_rate(self, pretrained: bool | str) -> float:
        """The recipe's rate, else the rule for its starting point."""
        return self.lr if self.lr is not None else (1e-4 if pretrained else 1e-3)

    @classmethod
    def from_default_config(
        cls, default_config: Mapping[str, Any], *, method: str
    ) -> MethodDefaults:
        """The typed form of the ``default_config`` dict methods declared before
        :attr:`Method.default_cfg` existed: {backbone, input_size, pretrained, training:
        {optimizer, lr, wd, grad_clip}}. Unknown keys raise a ``ValueError`` naming the
        method."""
        warnings.warn(
            f"method {method!r}: default_config is deprecated; declare default_cfg = "
            "MethodDefaults(...) (ldmdetect.methods.defaults)",
            DeprecationWarning,
            stacklevel=3,
        )
        values = {k: v for k, v in default_config.items() if k != "training"}
        for key, value in (default_config.get("training") or {}).items():
            values[_LEGACY_TRAINING.get(key, key)] = value
        try:
            return cls(**values)
        except TypeError as err:
            raise ValueError(f"method {method!r}: default_config: {err}") from err

    def to_default_config(self) -> dict[str, Any]:
        """The former ``default_config`` dict's shape, for :meth:`Method.defaults`."""
        training = {key: getattr(self, name) for key, name in _LEGACY_TRAINING.items()}
        values = {k: getattr(self, k) for k in ("backbone", "input_size", "pretrained")}
        return values | {"training": training}
