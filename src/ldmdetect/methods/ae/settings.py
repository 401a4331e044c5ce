"""Settings of ``ae``."""

from __future__ import annotations

from typing import Any

#: ``TrainConfig`` fields for a run of seconds on tiny components (the contract test's);
#: ``"<tiny>"`` stands for a tiny Stable Diffusion pipeline's directory.
TINY: dict[str, Any] = {"backbone": "mobilenetv3_small_050", "input_size": 32}
