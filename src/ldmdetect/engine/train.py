"""Train a detector on aligned pairs and save it as a detector directory.

Both members of a pair go into the same batch with the very same augmentation (crop box,
flip, resize, blur, JPEG quality): the only thing left to tell them apart is the autoencoder.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ldmdetect import methods
from ldmdetect.config import DetectorConfig, fpr_key
from ldmdetect.detector import Detector
from ldmdetect.engine.metrics import FPR_TARGETS, roc_auc, threshold_at_fpr
from ldmdetect.engine.reconstruct import DATASET_INFO_NAME, AlignedPair, read_aligned_dataset
from ldmdetect.io.crops import center_box, crop, ensure_min_size, random_boxes
from ldmdetect.io.images import load_image, pil_to_uint8
from ldmdetect.io.perturb import blur, jpeg, resize
from ldmdetect.models.classifier import backbone_normalization


@dataclass
class AugmentConfig:
    """Per-pair augmentation: each is drawn once per pair and applied to both members."""

    flip: float = 0.5
    jpeg_prob: float = 0.3
    jpeg_quality: tuple[int, int] = (65, 100)
    resize_prob: float = 0.2
    resize_scale: tuple[float, float] = (0.5, 1.5)
    blur_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.1, 2.0)


@dataclass
class TrainConfig:
    method: str = "ae"
    backbone: str = "tf_efficientnetv2_b0"
    pretrained: bool | str = False
    input_size: int | None = None  # default: the dataset's crop size
    epochs: int = 5
    batch_size: int = 16  # pairs per batch, so 2x images
    lr: float | None = None  # default: 1e-4 to fine-tune pretrained weights, 1e-3 from scratch
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    fprs: tuple[float, ...] = FPR_TARGETS


def split_by_source(
    pairs: Sequence[AlignedPair], val_fraction: float, seed: int
) -> tuple[list[AlignedPair], list[AlignedPair]]:
    """Train/val split by source image, never by crop: crops of one photo share content."""
    sources = sorted({p.source for p in pairs})
    if val_fraction <= 0:
        return list(pairs), []
    if len(sources) < 2:
        raise ValueError("a validation split needs pairs from at least 2 source images")
    rng = np.random.default_rng(seed)
    n_val = min(len(sources) - 1, max(1, round(val_fraction * len(sources))))
    val_sources = set(rng.permutation(sources)[:n_val].tolist())
    train = [p for p in pairs if p.source not in val_sources]
    val = [p for p in pairs if p.source in val_sources]
    return train, val


def augment_pair(
    real: Image.Image,
    fake: Image.Image,
    size: int,
    aug: AugmentConfig | None,
    rng: np.random.Generator,
) -> torch.Tensor:
    """(real, fake) -> uint8 (2, 3, size, size), both transformed identically.

    ``aug=None`` is evaluation: center crop, nothing else.
    """
    if aug is None:
        pair = [ensure_min_size(im, size) for im in (real, fake)]
        box = center_box(pair[0].width, pair[0].height, size)
        return torch.stack([pil_to_uint8(crop(im, box)) for im in pair])
    pair = [real, fake]
    if rng.random() < aug.resize_prob:
        factor = rng.uniform(*aug.resize_scale)
        pair = [resize(im, factor) for im in pair]
    pair = [ensure_min_size(im, size) for im in pair]
    box = random_boxes(pair[0].width, pair[0].height, size, 1, rng)[0]
    pair = [crop(im, box) for im in pair]
    if rng.random() < aug.flip:
        pair = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in pair]
    if rng.random() < aug.blur_prob:
        sigma = rng.uniform(*aug.blur_sigma)
        pair = [blur(im, sigma) for im in pair]
    if rng.random() < aug.jpeg_prob:
        quality = int(rng.integers(aug.jpeg_quality[0], aug.jpeg_quality[1] + 1))
        pair = [jpeg(im, quality) for im in pair]
    return torch.stack([pil_to_uint8(im) for im in pair])


class PairDataset(Dataset):
    """Aligned pairs -> uint8 (2, 3, S, S); the random stream depends on (seed, epoch, index)."""

    def __init__(
        self, pairs: Sequence[AlignedPair], size: int, aug: AugmentConfig | None, seed: int
    ) -> None:
        self.pairs = list(pairs)
        self.size = size
        self.aug = aug
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> torch.Tensor:
        pair = self.pairs[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return augment_pair(
            load_image(pair.real), load_image(pair.reconstructed), self.size, self.aug, rng
        )


def _pair_batch(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack(items).flatten(0, 1)  # real, fake, real, fake, ...
    labels = torch.tensor([0.0, 1.0]).repeat(len(items))
    return images, labels


def _loader(dataset: PairDataset, cfg: TrainConfig, shuffle: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        num_workers=cfg.num_workers,
        collate_fn=_pair_batch,
        generator=torch.Generator().manual_seed(cfg.seed),
        drop_last=False,
    )


def _lr_lambda(total_steps: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.no_grad()
def _evaluate(model: nn.Module, loader: DataLoader, method, config, accelerator) -> dict:
    model.eval()
    scores, labels, losses = [], [], []
    for images, y in loader:
        images, y = images.to(accelerator.device), y.to(accelerator.device)
        with accelerator.autocast():
            logits = method.logits(model, images, config)
        losses.append(nn.functional.binary_cross_entropy_with_logits(logits, y).item())
        scores.append(torch.sigmoid(logits).float().cpu())
        labels.append(y.cpu())
    s, y = torch.cat(scores).numpy(), torch.cat(labels).numpy()
    return {
        "loss": float(np.mean(losses)),
        "auc": roc_auc(y, s),
        "acc": float(((s > 0.5) == (y > 0.5)).mean()),
        "real_scores": s[y == 0],
    }


def train_detector(
    data: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    progress: bool = False,
) -> Detector:
    """Train ``config.method`` on the aligned datasets in ``data``; save to ``output``."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cfg = config or TrainConfig()
    method = methods.get(cfg.method)
    pairs = [p for directory in data for p in read_aligned_dataset(directory)]
    if not pairs:
        raise ValueError("no training pairs found in " + ", ".join(map(str, data)))
    infos = [_dataset_info(d) for d in data]
    crop_size = load_image(pairs[0].real).width
    size = cfg.input_size or crop_size
    train_pairs, val_pairs = split_by_source(pairs, cfg.val_fraction, cfg.seed)

    set_seed(cfg.seed)
    cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    precision = "no" if cpu else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    accelerator = Accelerator(cpu=cpu, mixed_precision=precision)
    mean, std = backbone_normalization(cfg.backbone)
    det_config = DetectorConfig(
        method=cfg.method,
        backbone=cfg.backbone,
        input_size=size,
        mean=mean,
        std=std,
        generator=next((i.get("autoencoder") for i in infos if i.get("autoencoder")), None),
    )
    model = method.build_model(det_config, pretrained=cfg.pretrained)
    lr = cfg.lr or (1e-4 if cfg.pretrained else 1e-3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    train_set = PairDataset(train_pairs, size, cfg.augment, cfg.seed)
    train_loader = _loader(train_set, cfg, shuffle=True)
    val_loader = _loader(PairDataset(val_pairs, size, None, cfg.seed), cfg, shuffle=False)
    total = cfg.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total, warmup=max(1, total // 20))
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, scheduler
    )

    history = []
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        train_set.epoch = epoch
        losses = []
        bar = tqdm(
            train_loader,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not (progress and accelerator.is_main_process),
            unit="batch",
        )
        for images, labels in bar:
            with accelerator.autocast():
                logits = method.logits(model, images, det_config)
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
            accelerator.backward(loss)
            if cfg.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        entry = {"epoch": epoch + 1, "train_loss": float(np.mean(losses))}
        if val_pairs:
            val = _evaluate(model, val_loader, method, det_config, accelerator)
            entry.update({f"val_{k}": v for k, v in val.items() if k != "real_scores"})
        history.append(entry)

    model = accelerator.unwrap_model(model).float().cpu().eval()
    det_config.thresholds = {"0.5": 0.5}
    calibration = "none: no validation split; only the 0.5 threshold is available"
    if val_pairs:
        # The final epoch is kept (no selection on the validation set), so the same held-out
        # real crops can calibrate the thresholds without selection bias.
        real_scores = val["real_scores"]
        for fpr in cfg.fprs:
            det_config.thresholds[fpr_key(fpr)] = float(threshold_at_fpr(real_scores, fpr))
        calibration = f"{len(real_scores)} held-out real crops"
    det_config.training = {
        "data": [str(d) for d in data],
        "datasets": infos,
        "pairs": {"train": len(train_pairs), "val": len(val_pairs)},
        "sources": {
            "train": len({p.source for p in train_pairs}),
            "val": len({p.source for p in val_pairs}),
        },
        "config": _jsonable(asdict(cfg)),
        "history": history,
        "threshold_calibration": calibration,
        "seconds": round(time.perf_counter() - start, 2),
        "device": str(accelerator.device),
    }
    detector = Detector(det_config, model, device="cpu")
    detector.save_pretrained(output)
    return detector


def _dataset_info(directory: str | os.PathLike) -> dict:
    path = Path(directory) / DATASET_INFO_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))
