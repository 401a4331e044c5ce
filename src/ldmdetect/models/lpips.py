"""LPIPS (Zhang et al., 2018) as a per-location distance map, truncated to the layers it reads.

AEROBLADE measures the distance between an image and its autoencoder reconstruction with one
LPIPS layer (the second VGG16 block, ``relu2_2``, by default), averaged over that layer's
spatial grid. This module rebuilds the ``lpips`` package's network (its scaling layer, VGG16
trunk cut where the package cuts it, and the calibrated 1x1 linear layers, which ship inside
the package) with only the trunk slices up to the deepest layer read, so a detector directory
stores about 1 MB of weights for layer 2 instead of the whole VGG16.

The VGG16 trunk's ImageNet weights come from torchvision (a download, or torch's hub cache);
where neither is reachable the trunk stays random, from a fixed seed, and
:attr:`LPIPSMap.weights_source` says so. Either way the detector saves the trunk it was
calibrated with, so a loaded detector never depends on what is reachable later.

Layers are numbered as in AEROBLADE's code: 1..5 are ``relu1_2`` .. ``relu5_3``; 0 is the sum
of all five (LPIPS as originally defined).
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ldmdetect.io.hub import hub_offline

VGG_LAYERS = 5
# torchvision vgg16().features index ranges of relu1_2 .. relu5_3, as the lpips package cuts them
_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
_CHANNELS = (64, 128, 256, 512, 512)
_VGG_WEIGHTS_FILE = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 checkpoint name


def lpips_layers(layer: int) -> list[int]:
    """AEROBLADE's layer number -> 0-based LPIPS layer indices (0 means all five)."""
    if not 0 <= layer <= VGG_LAYERS:
        raise ValueError(f"LPIPS VGG layer must be 0 (all) or 1..{VGG_LAYERS}, got {layer}")
    return list(range(VGG_LAYERS)) if layer == 0 else [layer - 1]


def imagenet_vgg16_state() -> tuple[dict[str, torch.Tensor] | None, str]:
    """torchvision's ImageNet VGG16 state dict and where it came from, or (None, reason).

    torch's hub cache is read first; the download is only tried when not offline
    (``HF_HUB_OFFLINE``), since an unreachable host costs seconds per attempt.
    """
    from torchvision.models import VGG16_Weights

    cached = Path(torch.hub.get_dir()) / "checkpoints" / _VGG_WEIGHTS_FILE
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True), f"file {cached}"
    if hub_offline():
        return None, "offline (HF_HUB_OFFLINE)"
    try:
        return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False), "torchvision download"
    except Exception as err:  # urllib, ssl and OS errors all mean "unreachable"
        return None, f"{type(err).__name__}: {err}"


class LPIPSMap(nn.Module):
    """``forward(a, b)`` -> LPIPS maps of the chosen layers for images in [0, 1].

    ``pretrained`` asks for the ImageNet VGG16 trunk (see the module doc); False builds the
    architecture only (random trunk from a fixed seed), as when loading saved weights.
    """

    def __init__(self, layer: int = 2, *, pretrained: bool = True) -> None:
        super().__init__()
        import lpips
        from torchvision.models.vgg import cfgs, make_layers

        self.layer = layer
        self.indices = lpips_layers(layer)
        depth = max(self.indices) + 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a random trunk is the same one on every build
            features = make_layers(cfgs["D"], batch_norm=False)  # VGG16's conv trunk only
        # Children keep torchvision's indices as names, so ImageNet weights map by name.
        self.scaling = lpips.ScalingLayer()
        self.slices = nn.ModuleList(
            nn.Sequential(OrderedDict((str(i), features[i]) for i in range(lo, hi)))
            for lo, hi in _SLICES[:depth]
        )
        lins = torch.load(
            Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth",
            map_location="cpu",
            weights_only=True,
        )
        self.lins = nn.ModuleList()
        for i in self.indices:
            lin = nn.Conv2d(_CHANNELS[i], 1, 1, bias=False)
            lin.weight.data.copy_(lins[f"lin{i}.model.1.weight"])
            self.lins.append(lin)
        for p in self.parameters():
            p.requires_grad_(False)
        version = importlib.metadata.version("lpips")
        trunk = "random VGG16 trunk"
        if pretrained:
            state, origin = imagenet_vgg16_state()
            if state is not None:
                self._load_trunk(state)
                trunk = f"VGG16 trunk ImageNet (torchvision IMAGENET1K_V1, {origin})"
            else:
                warnings.warn(
                    f"LPIPS uses a random VGG backbone: ImageNet VGG16 weights unreachable "
                    f"({origin})",
                    stacklevel=2,
                )
                trunk = f"random VGG16 trunk (ImageNet weights unreachable: {origin})"
        self.weights_source = f"lpips {version} linear layers (v0.1 vgg); {trunk}"
        self.eval()

    def _load_trunk(self, state: dict[str, torch.Tensor]) -> None:
        """Copy torchvision's ``features.{i}`` tensors into the slices (named by ``i``)."""
        for module in self.slices:
            for name, child in module.named_children():
                prefix = f"features.{name}."
                own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                if own:
                    child.load_state_dict(own)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
        """Images in [0, 1]: ``a`` (B, 3, H, W) against ``b`` of the same shape, or against K
        candidates each, ``b`` (B, K, 3, H, W) -> one map per chosen layer, (B, h_l, w_l) or
        (B, K, h_l, w_l), at that layer's own resolution (AEROBLADE averages them there).
        ``a``'s features are computed once however many candidates it is compared with."""
        n = a.shape[0]
        k = b.shape[1] if b.dim() == 5 else None
        x = self.scaling(torch.cat([a, b.flatten(0, 1) if k else b]) * 2 - 1)
        features = []
        for block in self.slices:
            x = block(x)
            features.append(x)
        maps = []
        for lin, index in zip(self.lins, self.indices, strict=True):
            f = features[index]
            f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            ref, other = f[:n], f[n:]
            if k:
                other = other.unflatten(0, (n, k))
                diff = (ref[:, None] - other).pow(2).flatten(0, 1)
                maps.append(lin(diff)[:, 0].unflatten(0, (n, k)))
            else:
                maps.append(lin((ref - other).pow(2))[:, 0])
        return maps


def lpips_distance(maps: list[torch.Tensor]) -> torch.Tensor:
    """Per-layer maps (..., h, w) -> the LPIPS distance (...): each layer's spatial mean,
    summed over layers."""
    return torch.stack([m.mean(dim=(-2, -1)) for m in maps]).sum(dim=0)


def lpips_map(maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Per-layer maps (B, h, w) -> one (B, *size) map (bilinear upsampling, summed over
    layers), whose mean equals :func:`lpips_distance` up to resampling."""
    up = [F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False) for m in maps]
    return torch.stack(up).sum(dim=0)[:, 0]
