"""The training loop (accelerate, DDP-safe) and its closed-form sibling for methods fitted on
cached features, plus the validation scoring both share."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ldmdetect.config import DetectorConfig
from ldmdetect.engine.metrics import roc_auc
from ldmdetect.engine.train_config import TrainConfig
from ldmdetect.engine.train_data import ExampleDataset, PairDataset, Skipped, data_loader
from ldmdetect.features.cache import FeatureCache
from ldmdetect.generative.loading import resolve_device
from ldmdetect.methods.batch import Batch, batch_to
from ldmdetect.methods.registry import FeatureStep, Method

#: A validation pass's (scores, labels).
Validation = tuple[np.ndarray, np.ndarray]

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


def _batches(
    loader: DataLoader,
    features: FeatureStep | None,
    cache: FeatureCache | None,
    device,
    skipped_files: dict[str, str] | None = None,
) -> Iterator[tuple[Batch, torch.Tensor]]:
    """A loader's (batch on ``device`` with its features, labels), noting each skipped file
    and passing over batches none of whose files decoded: the walk every pass that is not a
    training step makes (scoring, class probabilities, the closed-form fit's features)."""
    for batch, y, skipped in loader:
        _note(skipped, skipped_files)
        if batch is None:
            continue
        yield _with_features(batch, features, cache, device), y


class EvalPass(NamedTuple):
    """One eval-mode pass over a loader: what validation, threshold calibration and a family
    head's open-set rule are each computed from."""

    #: (N,) each sample's score, the mean over its views
    scores: np.ndarray
    #: (N,) class indices
    labels: np.ndarray
    #: the mean over batches of the first view's training loss
    loss: float
    #: (N, K) per-class probabilities, each the mean over the sample's views; None where the
    #: method's score is not a probability (``Method.probabilistic``)
    probabilities: np.ndarray | None


@torch.no_grad()
def eval_pass(
    method: Method,
    model: nn.Module,
    config: DetectorConfig,
    loader: DataLoader,
    device: torch.device,
    *,
    features: FeatureStep | None = None,
    cache: FeatureCache | None = None,
    skipped_files: dict[str, str] | None = None,
) -> EvalPass:
    """Score every sample of ``loader`` with ``model`` in eval mode (features added through
    ``cache``; files that fail are named in ``skipped_files``)."""
    model.eval()
    scores, labels, losses, probabilities = [], [], [], []
    for batch, y in _batches(loader, features, cache, device, skipped_files):
        logits = method.logits(model, batch, config)
        y = y.to(device)
        losses.append(method.loss(logits[:, 0], y).item())
        scores.append(method.scores(logits).mean(dim=1).double().cpu())
        labels.append(y.cpu())
        if method.probabilistic:
            probabilities.append(method.probabilities(logits).mean(dim=1).cpu())
    if not labels:
        k = len(method.classes_for(config))
        none = np.zeros((0, k)) if method.probabilistic else None
        return EvalPass(np.zeros(0), np.zeros(0, dtype=np.int64), float("nan"), none)
    return EvalPass(
        torch.cat(scores).numpy(),
        torch.cat(labels).numpy(),
        float(np.mean(losses)),
        torch.cat(probabilities).numpy() if method.probabilistic else None,
    )


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
) -> tuple[nn.Module, list[dict], Validation | None]:
    """Train ``model``: the final-epoch model on the CPU, the history, and the final epoch's
    validation (scores, labels) when there is a validation set.

    A method fitted in closed form (``Method.fit_features``) gets one pass of the feature step
    over the training set (through ``cache``), then its fit: a history of one entry. The
    others run the training loop (accelerate). The final epoch is kept, with no selection on
    the validation set, so the same held-out reals can calibrate the thresholds without
    selection bias.
    """

    def validate(entry: dict, trained: nn.Module, device: torch.device) -> Validation | None:
        """Score the validation set, add loss/AUC/ACC to a history ``entry``, return (s, y).
        Labels above 0 (a family head's families) all count as generated."""
        if val_loader is None:
            return None
        passes = {"features": features, "cache": cache, "skipped_files": skipped_files}
        s, y, loss, _ = eval_pass(method, trained, config, val_loader, device, **passes)
        generated = y > 0
        entry.update(
            val_loss=loss,
            val_auc=roc_auc(generated, s),
            val_acc=float(((s > 0.5) == generated).mean()),
        )
        return s, y

    if method.fits_features:
        if features is None:
            raise ValueError(f"method {method.name!r} fits on features but has no feature step")
        device = resolve_device(cfg.device)
        loader = data_loader(train_set, method, cfg, shuffle=False)
        bar = tqdm(loader, desc="features", disable=not progress, unit="batch")
        batches = _batches(bar, features, cache, device, skipped_files)
        entry = _fit_closed_form(method, config, model, batches, features.keys)
        last_val = validate(entry, model.to(device), device)
        return model.float().cpu().eval(), [entry], last_val
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
    defaults = method.default_cfg
    lr = cfg.lr or defaults.learning_rate(cfg.pretrained)
    weight_decay = cfg.weight_decay if cfg.weight_decay is not None else defaults.weight_decay
    grad_clip = cfg.grad_clip if cfg.grad_clip is not None else defaults.grad_clip
    params = [p for p in model.parameters() if p.requires_grad]
    if defaults.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            params, lr=lr, weight_decay=weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    train_loader = data_loader(train_set, method, cfg, shuffle=True)
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
        # Every rank scores all of it with the same weights: the same scores everywhere.
        last_val = validate(entry, _kept(accelerator, model, ema), device)
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


def fit_on_features(*args: Any, **kwargs: Any) -> tuple[nn.Module, list[dict], Validation | None]:
    """Deprecated: :func:`fit` fits the methods fitted in closed form (``Method.fit_features``)
    itself, with the same arguments."""
    warnings.warn("fit_on_features is deprecated; call fit", DeprecationWarning, stacklevel=2)
    return fit(*args, **kwargs)


@torch.no_grad()
def _fit_closed_form(
    method: Method,
    config: DetectorConfig,
    model: nn.Module,
    batches: Iterable[tuple[Batch, torch.Tensor]],
    keys: Sequence[str],
) -> dict:
    """The method's closed-form fit of ``model`` (moved to the CPU) on the feature step's
    outputs ``keys`` over the training ``batches``: the history's one entry."""
    collected: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    labels: list[torch.Tensor] = []
    for batch, y in batches:
        for key in keys:
            collected[key].append(batch[key].cpu())
        labels.append(y)
    if not labels:
        raise ValueError("no training image could be decoded")
    stacked = {key: torch.cat(values) for key, values in collected.items()}
    return {"epoch": 1, **method.fit_features(model.cpu(), stacked, torch.cat(labels), config)}


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
