"""Train (or calibrate) any registered method and save it as a detector directory.

Three verbs, as in scikit-learn: :func:`build` makes the config and a fresh model, :func:`fit`
runs the training loop (or, for methods fitted in closed form on cached features such as a
linear probe, one pass of the feature step and their fit), :func:`calibrate` sets the
thresholds on held-out real images.
:func:`train_detector` chains them for both kinds of training data:

- aligned pairs (``ldmdetect reconstruct``): both members of a pair go into the same batch with
  the very same augmentation, replayed from one seed, so only the autoencoder tells them apart;
- labelled images (``--real``/``--fake`` folders or the GenImage layout).

Methods with a device-side feature step (LaRE's UNet pass) read their features from a
:class:`FeatureCache` by image id when one is given (``ldmdetect extract``), and otherwise
compute them on the fly in the first epoch into a temporary cache reused by later epochs.

The pieces live beside this module: ``train_config`` (:class:`TrainConfig`), ``train_data``
(splits and datasets), ``train_loop`` (:func:`fit`) and ``train_families`` (what a family head
adds); this one builds the detector and drives them.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ldmdetect import methods
from ldmdetect.attribution import OTHER, known_families
from ldmdetect.config import DetectorConfig
from ldmdetect.detector import Detector
from ldmdetect.engine.calibrate import calibrate_detector, calibration_record
from ldmdetect.engine.reconstruct import DATASET_INFO_NAME, AlignedPair, read_aligned_dataset
from ldmdetect.engine.train_config import AugmentConfig, TrainConfig
from ldmdetect.engine.train_data import (
    ExampleDataset,
    JoinedDataset,
    PairDataset,
    data_loader,
    split_by_source,
    split_examples,
)
from ldmdetect.engine.train_families import (
    calibrate_families,
    family_counts,
    family_generations,
    family_sources,
    head_families,
    novelty_statistics,
    outlier_pairs,
)
from ldmdetect.engine.train_loop import eval_pass, fit, fit_on_features, is_main_process
from ldmdetect.features.cache import FeatureCache
from ldmdetect.generative.loading import resolve_device
from ldmdetect.io.images import ImageDecodeError, load_image
from ldmdetect.io.labeled import Example
from ldmdetect.methods.registry import FeatureStep, Method

__all__ = [
    "AugmentConfig",
    "TrainConfig",
    "build",
    "fit",
    "fit_on_features",
    "is_main_process",
    "make_config",
    "split_by_source",
    "split_examples",
    "train_detector",
]

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
    families: Sequence[str] = (),
) -> tuple[Method, DetectorConfig, nn.Module]:
    """The method, a fresh detector config and its model, initialised from ``cfg.seed``.
    ``families`` (two or more, for a method that attributes) makes the model a family head
    over ``("real", *families)``."""
    from accelerate.utils import set_seed

    method = methods.get(cfg.method)
    config = make_config(cfg, method, input_size=input_size, pipeline=pipeline, revision=revision)
    if families and method.attributes_families:
        config = replace(config, families=tuple(families))
    set_seed(cfg.seed)  # the model's initial weights depend on the seed alone
    # Methods on frozen networks (LPIPS, a foundation model) default to pretrained weights.
    pretrained = cfg.pretrained or method.default_cfg.pretrained
    model = method.build_model(config, pretrained=pretrained)
    weights_source = getattr(model, "weights_source", _weights_source(pretrained))
    return method, replace(config, weights_source=str(weights_source)), model


def _weights_source(pretrained: bool | str) -> str:
    if isinstance(pretrained, str) and pretrained:
        return f"file:{Path(pretrained).name}"
    return "timm pretrained" if pretrained else "random"


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
    generated: Sequence[tuple[str, str | os.PathLike]] = (),
    outliers: Sequence[str | os.PathLike] = (),
) -> Detector:
    """Train ``config.method`` on aligned datasets ``data`` and/or labelled ``examples``.

    ``generated``: (family, folder) pairs of a generator's own images, extra training data
    of that family for a family head (see :func:`family_generations`); the validation split
    takes its share of them too. ``outliers``: aligned datasets reconstructed through
    autoencoders of none of the head's families, whose reconstructions all train one more
    class, ``"other"`` (Outlier Exposure: see :mod:`ldmdetect.attribution`); their real
    crops train the real class as any pair's. Training-free methods (``Method.trains`` false) only
    calibrate their thresholds on the real images. The detector directory is written to
    ``output``.
    """
    cfg = config or TrainConfig()
    _check_augment(cfg)
    pairs = [p for directory in data for p in read_aligned_dataset(directory)]
    examples = list(examples)
    if not pairs and not examples:
        raise ValueError("no training data: give aligned datasets or real/fake images")
    infos = [_dataset_info(d) for d in data]
    crop = _crop_size(pairs)
    families = head_families(cfg.method, pairs, data)
    if outliers:
        other_pairs = outlier_pairs(outliers, families)
        families = (*families, OTHER)
        pairs += other_pairs
    family_examples = family_generations(generated, families) if generated else []
    method, det_config, model = build(
        cfg, input_size=crop, pipeline=pipeline, revision=revision, families=families
    )
    det_config = replace(
        det_config,
        generator=next((i.get("autoencoder") for i in infos if i.get("autoencoder")), None),
        family_sources=family_sources(infos, known_families(det_config.families))
        if det_config.families
        else det_config.family_sources,
    )

    if not method.trains:  # nothing is fitted, so every real image can calibrate
        train_pairs, val_pairs, train_ex, val_ex = [], pairs, [], examples
    else:
        if pairs and examples:
            raise ValueError("train on aligned pairs or on labelled images, not both at once")
        train_pairs, val_pairs = split_by_source(pairs, cfg.val_fraction, cfg.seed)
        train_ex, val_ex = split_examples(examples, cfg.val_fraction, cfg.seed)
    train_gen, val_gen = split_examples(family_examples, cfg.val_fraction, cfg.seed)

    start = time.perf_counter()
    device = resolve_device(cfg.device)
    features = method.build_features(det_config, device=device)
    with _feature_cache(feature_cache, features) as cache:
        evaluate_prepare = method.prepare(det_config)
        val_sets: list[Dataset] = []
        if val_pairs:
            val_sets.append(PairDataset(val_pairs, evaluate_prepare, cfg.seed, families))
        if val_ex:
            val_sets.append(ExampleDataset(val_ex, evaluate_prepare, cfg.seed))
        if val_gen:
            val_sets.append(ExampleDataset(val_gen, evaluate_prepare, cfg.seed))
        val_loader = (
            data_loader(torch.utils.data.ConcatDataset(val_sets), method, cfg, shuffle=False)
            if val_sets
            else None
        )
        history: list[dict] = []
        skipped: dict[str, str] = {}
        last_val: tuple[np.ndarray, np.ndarray] | None = None
        if method.trains and cfg.epochs > 0:
            # Pixel augmentation where the method applies it (_check_augment refused it asked
            # of any other); every trained method draws one random view per image.
            augment = cfg.augment if method.pixel_augmentation else None
            train_prepare = method.prepare(det_config, train=True, augment=augment)
            train_set: Dataset = (
                PairDataset(train_pairs, train_prepare, cfg.seed, families)
                if train_pairs
                else ExampleDataset(train_ex, train_prepare, cfg.seed)
            )
            if train_gen:
                train_set = JoinedDataset(
                    [train_set, ExampleDataset(train_gen, train_prepare, cfg.seed)]
                )
            model, history, last_val = fit(
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
            s, y, _, _ = eval_pass(
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
        family_threshold, family_record = det_config.family_threshold, None
        if det_config.families:
            family_threshold, family_record = calibrate_families(
                method, model, det_config, val_loader, device, features, cache
            )
            model = model.cpu()
    val_real_sources = [p.source for p in val_pairs] + [e.group for e in val_ex if e.label == 0]
    thresholds, calibration = calibration_record(
        real_scores,
        cfg.fprs,
        # The validation reals that scored (a file that failed to decode has no score).
        sources=val_real_sources if len(val_real_sources) == len(real_scores) else None,
        on=f"{len(real_scores)} held-out validation reals"
        + (f" of {len(set(val_real_sources))} source images" if val_real_sources else ""),
        probabilistic=method.probabilistic,
    )
    training = {
        "data": [str(d) for d in data],
        "datasets": infos,
        "pairs": {"train": len(train_pairs), "val": len(val_pairs)},
        "examples": {
            "train": _counts(train_ex),
            "val": _counts(val_ex),
        },
        "generated": {
            "folders": {family: str(folder) for family, folder in generated},
            "train": family_counts(train_gen, known_families(families)),
            "val": family_counts(val_gen, known_families(families)),
        }
        if generated
        else None,
        "sources": {
            "train": len({p.source for p in train_pairs}),
            "val": len({p.source for p in val_pairs}),
        },
        "feature_cache": str(feature_cache) if feature_cache else None,
        "families": family_record,
        "outliers": [str(d) for d in outliers],
        "skipped_files": skipped,
        "config": _jsonable(asdict(cfg)),
        "history": history,
        "threshold_calibration": calibration["on"],
        "seconds": round(time.perf_counter() - start, 2),
        "device": str(device),
    }
    det_config = replace(
        det_config,
        family_threshold=family_threshold,
        thresholds=thresholds,
        calibration=calibration,
        training=training,
    )
    novelty = None
    if det_config.families and method.trains and train_pairs:
        novelty = novelty_statistics(
            Detector(det_config, model, device=device), train_pairs, train_gen, val_pairs
        )
        model = model.cpu()
    detector = Detector(det_config, model, device="cpu", novelty=novelty)
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
            # The novelty rule too: calibration re-derived its threshold on the same reals.
            detector = Detector(calibrated.config, model, device="cpu", novelty=calibrated.novelty)
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
