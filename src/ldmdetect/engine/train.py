"""Train (or calibrate) any registered method and save it as a detector directory.

Three verbs, as in scikit-learn: :func:`build` makes the config and a fresh model, :func:`fit`
runs the training loop (or :func:`fit_on_features`, for methods fitted in closed form on cached
features such as a linear probe), :func:`calibrate` sets the thresholds on held-out real images.
:func:`train_detector` chains them for both kinds of training data:

- aligned pairs (``ldmdetect reconstruct``): both members of a pair go into the same batch with
  the very same augmentation, replayed from one seed, so only the autoencoder tells them apart;
- labelled images (``--real``/``--fake`` folders or the GenImage layout).

Methods with a device-side feature step (LaRE's UNet pass) read their features from a
:class:`FeatureCache` by image id when one is given (``ldmdetect extract``), and otherwise
compute them on the fly in the first epoch into a temporary cache reused by later epochs.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ldmdetect import methods
from ldmdetect.config import DetectorConfig
from ldmdetect.detector import Detector
from ldmdetect.engine.calibrate import calibrate_detector, calibration_record
from ldmdetect.engine.metrics import FPR_TARGETS, roc_auc
from ldmdetect.engine.reconstruct import DATASET_INFO_NAME, AlignedPair, read_aligned_dataset
from ldmdetect.features.cache import FeatureCache
from ldmdetect.generative.loading import resolve_device
from ldmdetect.io.augment import AugmentConfig
from ldmdetect.io.images import ImageDecodeError, load_image
from ldmdetect.io.labeled import Example
from ldmdetect.methods.registry import Batch, FeatureStep, Method, PrepareImage, batch_to

__all__ = [
    "AugmentConfig",
    "TrainConfig",
    "build",
    "fit",
    "fit_on_features",
    "train_detector",
]


@dataclass
class TrainConfig:
    """How to train. ``None`` means the method's default (``Method.defaults()``)."""

    method: str = "ae"
    backbone: str | None = None
    pretrained: bool | str = False
    input_size: int | None = None  # pairs: default the dataset's crop size
    epochs: int = 5
    batch_size: int = 16  # examples per batch (pairs count once: 2 images each)
    lr: float | None = None  # default: the method's, else 1e-4 pretrained / 1e-3 from scratch
    weight_decay: float | None = None
    grad_clip: float | None = None
    val_fraction: float = 0.1
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    # Train in channels-last memory format. None: on a GPU (faster there for convolutions,
    # and what Detector uses for inference), not on a CPU, where it depends on the network:
    # training EfficientNet-Lite0 runs 1.7x faster, ResNet-18 alike, ConvNeXt-T 1.15x slower
    # (2 cores). Only the memory layout changes; the saved weights are contiguous either way.
    channels_last: bool | None = None
    # Keep an exponential moving average of the weights (timm's ModelEmaV3, batch-norm
    # statistics included) and save and validate that instead of the last step's weights.
    # After k optimizer steps the decay is min(ema_decay, 1 - k^(-2/3)) (a warm-up), so short
    # runs are not pinned to the initial weights. None: the last step's weights.
    ema_decay: float | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    fprs: tuple[float, ...] = FPR_TARGETS
    # Folders of real images the final model's thresholds are calibrated on instead of the
    # validation reals: images of many sources like those the detector will scan (first-level
    # subfolders count as sources). Empty: the validation split's reals.
    calibration_reals: tuple[str, ...] = ()
    feature: dict[str, Any] = field(default_factory=dict)  # overrides of the method's settings


# ---------------------------------------------------------------------------------- splitting


def split_by_source(
    pairs: Sequence[AlignedPair], val_fraction: float, seed: int
) -> tuple[list[AlignedPair], list[AlignedPair]]:
    """Train/val split by source image, never by crop: crops of one photo share content."""
    if not pairs:
        return [], []
    train, val = _split_groups(list(pairs), [p.source for p in pairs], val_fraction, seed)
    return train, val


def split_examples(
    examples: Sequence[Example], val_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Split by group, separately within each class, so validation holds reals and fakes."""
    if not examples:
        return [], []
    train: list[Example] = []
    val: list[Example] = []
    for label in sorted({e.label for e in examples}):
        members = [e for e in examples if e.label == label]
        t, v = _split_groups(members, [e.group for e in members], val_fraction, seed + label)
        train += t
        val += v
    return train, val


def _split_groups(items: list, groups: list[str], val_fraction: float, seed: int):
    if val_fraction <= 0:
        return items, []
    names = sorted(set(groups))
    if len(names) < 2:
        raise ValueError("a validation split needs examples from at least 2 source images")
    rng = np.random.default_rng(seed)
    n_val = min(len(names) - 1, max(1, round(val_fraction * len(names))))
    val_names = set(rng.permutation(names)[:n_val].tolist())
    train = [x for x, g in zip(items, groups, strict=True) if g not in val_names]
    val = [x for x, g in zip(items, groups, strict=True) if g in val_names]
    return train, val


# ----------------------------------------------------------------------------------- datasets


class PairDataset(Dataset):
    """Aligned pairs -> [(real sample, 0), (reconstruction sample, 1)], augmented alike.

    The random stream depends on (seed, epoch, index) only; both members replay it.
    """

    def __init__(self, pairs: Sequence[AlignedPair], prepare: PrepareImage, seed: int) -> None:
        self.pairs, self.prepare, self.seed, self.epoch = list(pairs), prepare, seed, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> list[tuple[dict, int]] | Skipped:
        pair = self.pairs[index]
        out = []
        for path, label in ((pair.real, 0), (pair.reconstructed, 1)):
            rng = np.random.default_rng([self.seed, self.epoch, index])
            try:
                image = load_image(path)
            except ImageDecodeError as err:  # the pair is unusable without both members
                return Skipped(str(path), err.reason)
            out.append((self.prepare(image, path=path, rng=rng), label))
        return out


class ExampleDataset(Dataset):
    """Labelled images -> [(sample, label)]; random stream from (seed, epoch, index)."""

    def __init__(self, examples: Sequence[Example], prepare: PrepareImage, seed: int) -> None:
        self.examples, self.prepare, self.seed, self.epoch = list(examples), prepare, seed, 0

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> list[tuple[dict, int]] | Skipped:
        ex = self.examples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        try:
            image = load_image(ex.path)
        except ImageDecodeError as err:
            return Skipped(ex.path, err.reason)
        sample = self.prepare(image, path=ex.path, class_name=ex.class_name, rng=rng)
        return [(sample, ex.label)]


@dataclass(frozen=True)
class Skipped:
    """A file that could not be decoded: reported in the training summary, never fatal."""

    path: str
    reason: str


class _Collate:
    """Flatten [(sample, label), ...] lists into one method batch, a label tensor and the
    files skipped in this batch."""

    def __init__(self, method: Method) -> None:
        self.method = method

    def __call__(self, items: list) -> tuple[Batch | None, torch.Tensor, list[Skipped]]:
        skipped = [item for item in items if isinstance(item, Skipped)]
        flat = [pair for item in items if not isinstance(item, Skipped) for pair in item]
        if not flat:
            return None, torch.zeros(0), skipped
        batch = self.method.collate([s for s, _ in flat])
        return batch, torch.tensor([float(y) for _, y in flat]), skipped


def _loader(dataset: Dataset, method: Method, cfg: TrainConfig, shuffle: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        num_workers=cfg.num_workers,
        collate_fn=_Collate(method),
        generator=torch.Generator().manual_seed(cfg.seed),
    )


# -------------------------------------------------------------------------------------- build


def make_config(
    cfg: TrainConfig,
    method: Method,
    *,
    input_size: int | None = None,
    pipeline: str | os.PathLike | None = None,
    revision: str | None = None,
) -> DetectorConfig:
    """A fresh detector config from a training config: :func:`ldmdetect.methods.make_config`
    with ``cfg``'s backbone, input size (else ``input_size``, the aligned crops'), feature
    overrides and pretrained choice."""
    return methods.make_config(
        method,
        backbone=cfg.backbone,
        input_size=cfg.input_size or input_size,
        feature=cfg.feature,
        pipeline=pipeline,
        revision=revision,
        pretrained=cfg.pretrained or None,
    )


def build(
    cfg: TrainConfig,
    *,
    input_size: int | None = None,
    pipeline: str | os.PathLike | None = None,
    revision: str | None = None,
) -> tuple[Method, DetectorConfig, nn.Module]:
    """The method, a fresh detector config and its model, initialised from ``cfg.seed``."""
    from accelerate.utils import set_seed

    method = methods.get(cfg.method)
    config = make_config(cfg, method, input_size=input_size, pipeline=pipeline, revision=revision)
    set_seed(cfg.seed)  # the model's initial weights depend on the seed alone
    # Methods on frozen networks (LPIPS, a foundation model) default to pretrained weights.
    pretrained = cfg.pretrained or method.defaults().get("pretrained", False)
    model = method.build_model(config, pretrained=pretrained)
    config.weights_source = str(getattr(model, "weights_source", _weights_source(pretrained)))
    return method, config, model


def _weights_source(pretrained: bool | str) -> str:
    if isinstance(pretrained, str) and pretrained:
        return f"file:{Path(pretrained).name}"
    return "timm pretrained" if pretrained else "random"


# ---------------------------------------------------------------------------------------- fit


def _lr_lambda(total_steps: int, warmup: int):
    """Linear warmup reaching the full rate on step ``warmup - 1``, then a cosine to 0 at
    ``total_steps``. From step ``warmup`` on this is transformers'
    ``get_cosine_schedule_with_warmup``; that one's warmup lags a step behind and starts at a
    rate of 0 (a first step that does nothing: the whole warmup when ``warmup`` is 1), so
    swapping it in would change every trained detector."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _note(skipped: list[Skipped], into: dict[str, str] | None) -> None:
    for item in skipped:
        if into is not None and item.path not in into:
            warnings.warn(f"skipped {item.path}: {item.reason}", stacklevel=2)
            into[item.path] = item.reason


def _with_features(
    batch: Batch, features: FeatureStep | None, cache: FeatureCache | None, device
) -> Batch:
    batch = batch_to(batch, device)
    if features is None:
        return batch
    with torch.no_grad():
        return features.add_to(batch, cache, device=device)


@torch.no_grad()
def score_loader(
    method: Method,
    model: nn.Module,
    config: DetectorConfig,
    loader: DataLoader,
    device: torch.device,
    *,
    features: FeatureStep | None = None,
    cache: FeatureCache | None = None,
    skipped_files: dict[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(scores, labels, mean loss) over a loader of eval-mode samples."""
    model.eval()
    scores, labels, losses = [], [], []
    for batch, y, skipped in loader:
        _note(skipped, skipped_files)
        if batch is None:
            continue
        batch = _with_features(batch, features, cache, device)
        logits = method.logits(model, batch, config)
        y = y.to(device)
        losses.append(method.loss(logits[:, 0], y).item())
        scores.append(method.scores(logits).mean(dim=1).double().cpu())
        labels.append(y.cpu())
    return torch.cat(scores).numpy(), torch.cat(labels).numpy(), float(np.mean(losses))


def _validate(
    entry: dict,
    method: Method,
    model: nn.Module,
    config: DetectorConfig,
    loader: DataLoader,
    device: torch.device,
    **score_kwargs,
) -> tuple[np.ndarray, np.ndarray]:
    """Score the validation set, add loss/AUC/ACC to a history ``entry``, return (s, y)."""
    s, y, loss = score_loader(method, model, config, loader, device, **score_kwargs)
    entry.update(val_loss=loss, val_auc=roc_auc(y, s), val_acc=float(((s > 0.5) == y).mean()))
    return s, y


def _forget_accelerator_state(cpu: bool, precision: str) -> None:
    """Let one process train detectors on different devices or precisions, one after another.

    accelerate keeps a process-wide state and refuses a second ``Accelerator`` with another
    device or mixed precision (a notebook or a sweep that trains on the CPU, then on a GPU).
    The distributed part (``PartialState``: ranks, process group) is kept, so DDP runs are
    unaffected; only the per-training settings start afresh when they differ.
    """
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and (
        state.get("_cpu", cpu) != cpu or state.get("_mixed_precision", precision) != precision
    ):
        AcceleratorState._reset_state()


def fit(
    method: Method,
    config: DetectorConfig,
    model: nn.Module,
    train_set: PairDataset | ExampleDataset,
    val_loader: DataLoader | None,
    cfg: TrainConfig,
    *,
    features: FeatureStep | None = None,
    cache: FeatureCache | None = None,
    skipped_files: dict[str, str] | None = None,
    progress: bool = False,
) -> tuple[nn.Module, list[dict], tuple[np.ndarray, np.ndarray] | None]:
    """The training loop (accelerate): the final-epoch model on the CPU, the history, and the
    final epoch's validation (scores, labels) when there is a validation set.

    The final epoch is kept, with no selection on the validation set, so the same held-out
    reals can calibrate the thresholds without selection bias.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    cpu = resolve_device(cfg.device).type == "cpu"
    precision = "no" if cpu else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    _forget_accelerator_state(cpu, precision)
    accelerator = Accelerator(cpu=cpu, mixed_precision=precision)
    if _channels_last(cfg, cpu):
        # Weights in channels-last make every convolution's output channels-last too.
        model = model.to(memory_format=torch.channels_last)
    defaults = method.defaults().get("training", {})
    lr = cfg.lr or defaults.get("lr") or (1e-4 if cfg.pretrained else 1e-3)
    weight_decay = cfg.weight_decay if cfg.weight_decay is not None else defaults.get("wd", 0.05)
    grad_clip = cfg.grad_clip if cfg.grad_clip is not None else defaults.get("grad_clip", 1.0)
    params = [p for p in model.parameters() if p.requires_grad]
    if defaults.get("optimizer") == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            params, lr=lr, weight_decay=weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    train_loader = _loader(train_set, method, cfg, shuffle=True)
    total = max(1, cfg.epochs * len(train_loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total, warmup=max(1, total // 20))
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, scheduler
    )
    device = accelerator.device
    ema = _weight_average(accelerator.unwrap_model(model), cfg.ema_decay)
    history = []
    last_val = None
    step = 0
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
        for batch, labels, skipped in bar:
            _note(skipped, skipped_files)
            if not _every_rank_has_a_batch(accelerator, batch is not None):
                continue
            batch = _with_features(batch, features, cache, device)
            with accelerator.autocast():
                logits = method.logits(model, batch, config)
                loss = method.loss(logits[:, 0], labels.to(device))
            accelerator.backward(loss)
            if grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if ema is not None:
                ema.update(accelerator.unwrap_model(model), step=step)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        _same_buffers(accelerator, accelerator.unwrap_model(model))
        # The mean over every rank's batches, so all ranks (and the saved history) agree.
        total, count = accelerator.reduce(
            torch.tensor([sum(losses), len(losses)], dtype=torch.float64, device=device), "sum"
        ).tolist()
        entry = {"epoch": epoch + 1, "train_loss": total / count if count else None}
        if val_loader is not None:
            # Every rank scores all of it with the same weights: the same scores everywhere.
            last_val = _validate(
                entry,
                method,
                _kept(accelerator, model, ema),
                config,
                val_loader,
                device,
                features=features,
                cache=cache,
                skipped_files=skipped_files,
            )
        history.append(entry)
    _gather_skipped(accelerator, skipped_files)
    model = _kept(accelerator, model, ema).float().cpu().eval()
    return model.to(memory_format=torch.contiguous_format), history, last_val


def _weight_average(model: nn.Module, decay: float | None):
    """An EMA of ``model``'s weights and buffers (timm), or None when ``decay`` is None."""
    if decay is None:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must lie strictly between 0 and 1, got {decay}")
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay, use_warmup=True)


def _kept(accelerator, model: nn.Module, ema) -> nn.Module:
    """The weights that are validated and saved: the average if there is one, else the model."""
    return ema.module if ema is not None else accelerator.unwrap_model(model)


def _channels_last(cfg: TrainConfig, cpu: bool) -> bool:
    """``cfg.channels_last``, where ``None`` means on a GPU only (see :class:`TrainConfig`)."""
    return not cpu if cfg.channels_last is None else cfg.channels_last


def _every_rank_has_a_batch(accelerator, has_batch: bool) -> bool:
    """Whether this step trains: on every rank or on none.

    Under DDP each backward pass ends in a gradient all-reduce that every rank must join. A rank
    whose whole batch failed to decode and skipped its step would leave the others waiting
    there, or pair their all-reduces off by one step until the run hangs or the weights drift
    apart. So when any rank has nothing to train on, all ranks skip that step (rare: it takes a
    batch of files that all fail). One process: just whether it has a batch.
    """
    if accelerator.num_processes == 1:
        return has_batch
    flag = torch.tensor([float(has_batch)], device=accelerator.device)
    return int(accelerator.reduce(flag, "sum").item()) == accelerator.num_processes


def _gather_skipped(accelerator, skipped_files: dict[str, str] | None) -> None:
    """Each rank decodes its own share of the training files; merge what every rank skipped,
    so the detector rank 0 saves names every undecodable file, not only rank 0's."""
    if skipped_files is None or accelerator.num_processes == 1:
        return
    from accelerate.utils import gather_object

    for ranks_files in gather_object([skipped_files]):
        for path, reason in ranks_files.items():
            skipped_files.setdefault(path, reason)


@torch.no_grad()
def fit_on_features(
    method: Method,
    config: DetectorConfig,
    model: nn.Module,
    train_set: PairDataset | ExampleDataset,
    val_loader: DataLoader | None,
    cfg: TrainConfig,
    *,
    features: FeatureStep | None = None,
    cache: FeatureCache | None = None,
    skipped_files: dict[str, str] | None = None,
    progress: bool = False,
) -> tuple[nn.Module, list[dict], tuple[np.ndarray, np.ndarray] | None]:
    """:func:`fit` for methods fitted in closed form (``Method.fit_features``): one pass of
    the feature step over the training set (through ``cache``), then the method's fit, then
    the validation scores. Same returns as :func:`fit`; the history has one entry."""
    if features is None:
        raise ValueError(f"method {method.name!r} fits on features but has no feature step")
    device = resolve_device(cfg.device)
    collected: dict[str, list[torch.Tensor]] = {key: [] for key in features.keys}
    labels: list[torch.Tensor] = []
    loader = _loader(train_set, method, cfg, shuffle=False)
    for batch, y, skipped in tqdm(loader, desc="features", disable=not progress, unit="batch"):
        _note(skipped, skipped_files)
        if batch is None:
            continue
        batch = _with_features(batch, features, cache, device)
        for key in features.keys:
            collected[key].append(batch[key].cpu())
        labels.append(y)
    if not labels:
        raise ValueError("no training image could be decoded")
    stacked = {key: torch.cat(values) for key, values in collected.items()}
    model = model.cpu()
    entry = {"epoch": 1, **method.fit_features(model, stacked, torch.cat(labels), config)}
    last_val = None
    if val_loader is not None:
        last_val = _validate(
            entry,
            method,
            model.to(device),
            config,
            val_loader,
            device,
            features=features,
            cache=cache,
            skipped_files=skipped_files,
        )
    return model.float().cpu().eval(), [entry], last_val


def _same_buffers(accelerator, model: nn.Module) -> None:
    """DDP averages gradients, not buffers: each rank's BatchNorm statistics follow its own
    batches. Rank 0's are taken, so all ranks validate, calibrate and end with one model."""
    if accelerator.num_processes > 1:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer.data, src=0)


def is_main_process() -> bool:
    """Rank 0 of a distributed launch (accelerate launch, torchrun), or a lone process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


# ------------------------------------------------------------------------------------ driver


def train_detector(
    data: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    examples: Sequence[Example] = (),
    pipeline: str | os.PathLike | None = None,
    revision: str | None = None,
    feature_cache: str | os.PathLike | None = None,
    progress: bool = False,
) -> Detector:
    """Train ``config.method`` on aligned datasets ``data`` and/or labelled ``examples``.

    Training-free methods (``Method.trains`` false) only calibrate their thresholds on the
    real images. The detector directory is written to ``output``.
    """
    cfg = config or TrainConfig()
    _check_augment(cfg)
    pairs = [p for directory in data for p in read_aligned_dataset(directory)]
    examples = list(examples)
    if not pairs and not examples:
        raise ValueError("no training data: give aligned datasets or real/fake images")
    infos = [_dataset_info(d) for d in data]
    crop = _crop_size(pairs)
    method, det_config, model = build(cfg, input_size=crop, pipeline=pipeline, revision=revision)
    det_config.generator = next((i.get("autoencoder") for i in infos if i.get("autoencoder")), None)

    if not method.trains:  # nothing is fitted, so every real image can calibrate
        train_pairs, val_pairs, train_ex, val_ex = [], pairs, [], examples
    else:
        if pairs and examples:
            raise ValueError("train on aligned pairs or on labelled images, not both at once")
        train_pairs, val_pairs = split_by_source(pairs, cfg.val_fraction, cfg.seed)
        train_ex, val_ex = split_examples(examples, cfg.val_fraction, cfg.seed)

    start = time.perf_counter()
    device = resolve_device(cfg.device)
    features = method.build_features(det_config, device=device)
    with _feature_cache(feature_cache, features) as cache:
        evaluate_prepare = method.prepare(det_config)
        val_sets: list[Dataset] = []
        if val_pairs:
            val_sets.append(PairDataset(val_pairs, evaluate_prepare, cfg.seed))
        if val_ex:
            val_sets.append(ExampleDataset(val_ex, evaluate_prepare, cfg.seed))
        val_loader = (
            _loader(torch.utils.data.ConcatDataset(val_sets), method, cfg, shuffle=False)
            if val_sets
            else None
        )
        history: list[dict] = []
        skipped: dict[str, str] = {}
        last_val: tuple[np.ndarray, np.ndarray] | None = None
        if method.trains and cfg.epochs > 0:
            train_prepare = method.prepare(det_config, augment=cfg.augment)
            train_set = (
                PairDataset(train_pairs, train_prepare, cfg.seed)
                if train_pairs
                else ExampleDataset(train_ex, train_prepare, cfg.seed)
            )
            fitter = fit_on_features if method.fits_features else fit
            model, history, last_val = fitter(
                method,
                det_config,
                model,
                train_set,
                val_loader,
                cfg,
                features=features,
                cache=cache,
                skipped_files=skipped,
                progress=progress,
            )
        if last_val is None and val_loader is not None:
            s, y, _ = score_loader(
                method,
                model.to(device),
                det_config,
                val_loader,
                device,
                features=features,
                cache=cache,
                skipped_files=skipped,
            )
            last_val = s, y
            model = model.cpu()
        real_scores = last_val[0][last_val[1] == 0] if last_val is not None else np.zeros(0)
    val_real_sources = [p.source for p in val_pairs] + [e.group for e in val_ex if e.label == 0]
    det_config.thresholds, det_config.calibration = calibration_record(
        real_scores,
        cfg.fprs,
        # The validation reals that scored (a file that failed to decode has no score).
        sources=val_real_sources if len(val_real_sources) == len(real_scores) else None,
        on=f"{len(real_scores)} held-out validation reals"
        + (f" of {len(set(val_real_sources))} source images" if val_real_sources else ""),
        probabilistic=method.probabilistic,
    )
    det_config.training = {
        "data": [str(d) for d in data],
        "datasets": infos,
        "pairs": {"train": len(train_pairs), "val": len(val_pairs)},
        "examples": {
            "train": _counts(train_ex),
            "val": _counts(val_ex),
        },
        "sources": {
            "train": len({p.source for p in train_pairs}),
            "val": len({p.source for p in val_pairs}),
        },
        "feature_cache": str(feature_cache) if feature_cache else None,
        "skipped_files": skipped,
        "config": _jsonable(asdict(cfg)),
        "history": history,
        "threshold_calibration": det_config.calibration["on"],
        "seconds": round(time.perf_counter() - start, 2),
        "device": str(device),
    }
    detector = Detector(det_config, model, device="cpu")
    if is_main_process():  # every rank holds the same detector; one writes it
        detector.save_pretrained(output)
        if cfg.calibration_reals:
            calibrated = calibrate_detector(
                output,
                cfg.calibration_reals,
                output,
                fprs=cfg.fprs,
                batch_size=cfg.batch_size,
                num_workers=cfg.num_workers,
                device=str(device),
            )
            detector = Detector(calibrated.config, model, device="cpu")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank returns before the directory is complete
    return detector


def _check_augment(cfg: TrainConfig) -> None:
    """An augmentation asked of a method that does not apply it is an error, not a no-op."""
    method = methods.get(cfg.method)
    if method.trains and not method.pixel_augmentation and cfg.augment != AugmentConfig():
        raise ValueError(
            f"method {cfg.method!r} does not apply --augment: its features are computed from "
            "the un-augmented image (training views are only cropped and flipped); leave "
            "--augment out"
        )


def _crop_size(pairs: Sequence[AlignedPair]) -> int | None:
    """The input size aligned pairs imply: the width of the first real crop that decodes. A
    corrupt file is the training loop's to skip and report, not a reason to stop before it."""
    for pair in pairs:
        try:
            return load_image(pair.real).width
        except ImageDecodeError:
            continue
    return None


class _feature_cache:
    """The user's cache, or a temporary one that lives for one training run."""

    def __init__(self, root: str | os.PathLike | None, features: FeatureStep | None) -> None:
        self.root, self.features, self._tmp = root, features, None

    def __enter__(self) -> FeatureCache | None:
        if self.features is None:
            return None
        if self.root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ldmdetect-features-")
            root: str | os.PathLike = self._tmp.name
        else:
            root = self.root
        self.cache = FeatureCache(root, settings=self.features.settings(), shard_size=256)
        return self.cache

    def __exit__(self, *exc: object) -> None:
        if self.features is not None:
            self.cache.flush()
        if self._tmp is not None:
            self._tmp.cleanup()


def _counts(examples: Sequence[Example]) -> dict[str, int]:
    return {
        "real": sum(e.label == 0 for e in examples),
        "fake": sum(e.label == 1 for e in examples),
    }


def _dataset_info(directory: str | os.PathLike) -> dict:
    path = Path(directory) / DATASET_INFO_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))
