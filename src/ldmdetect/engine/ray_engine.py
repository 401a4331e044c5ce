"""``scan`` and ``extract`` on Ray Data: one machine's cores or GPUs, or a whole cluster.

The local engine (``engine/scan.py``, ``engine/extract.py``) runs one model beside a few
decoding processes. Here the paths are listed on the driver and streamed through a pool of
Ray actors, each holding one copy of the model (one GPU per actor when the cluster has GPUs).
An actor decodes its batch itself, through the same ``load_each`` loop as the local engine, so a
bad file becomes an error row with the same reason, never a failed job.

- ``ray_scan`` writes one Parquet row per file (path, score, label, threshold, error, verdict,
  and ``p_<class>`` per class for methods of more than two classes) into a directory (local
  or a URI such as ``s3://``), one file per block, in no particular order.
- ``ray_extract`` writes LaRE maps (or any method's features) into the usual ``FeatureCache``.
  Every actor writes its own shards: shard names are random, so concurrent writers never
  collide, and ``cache.json`` is written by the driver before any actor starts. One Ray batch
  becomes one shard, so ``shard_size`` sets both.

Every node must see the input paths, the detector (directory or hub id) and the output at the
same place (a shared file system or object storage), and must have ldmdetect installed.
``address=None`` starts Ray on this machine unless one is already running in this process or
``RAY_ADDRESS`` names a cluster; ``address="auto"`` or ``"ray://head:10001"`` joins a cluster.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ldmdetect import methods
from ldmdetect.engine.extract import ExtractSummary
from ldmdetect.engine.loader import load_each
from ldmdetect.engine.scan import (
    FAMILY_COLUMNS,
    PrepareFile,
    ScanRow,
    class_columns,
    row_values,
    scan_row,
)
from ldmdetect.io.images import DEFAULT_MAX_PIXELS

__all__ = ["RayScanSummary", "RayUnavailable", "ray_extract", "ray_scan"]


class RayUnavailable(ImportError):
    """Ray is not installed: the message says which extra to install."""


def import_ray():
    """The ``ray`` module, or :class:`RayUnavailable` saying which extra to install."""
    try:
        import ray
        import ray.data
    except ImportError as err:  # an optional extra: say how to get it
        message = f"the Ray engine needs the ray extra: pip install 'ldmdetect[ray]' ({err})"
        raise RayUnavailable(message) from None
    return ray


@contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """Ray, initialised for the duration: joined at ``address``, or started on this machine.

    A session already open in this process (a notebook, a test) is used as it is and left
    open; one started here is shut down on exit.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    ray.init(address=address, include_dashboard=False, log_to_driver=True)
    try:
        yield ray
    finally:
        ray.shutdown()


def _pool(ray: Any, actors: int | None, device: str) -> tuple[Any, dict[str, float], str]:
    """The actor pool, each actor's resources and its torch device: one GPU per actor when the
    cluster has GPUs and ``device`` allows them (auto, cuda), else one CPU per actor, leaving
    one CPU to Ray's own tasks. Ray shows each GPU actor only its own GPU, as "cuda"."""
    from ray.data import ActorPoolStrategy

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if device == "auto" or device.startswith("cuda") else 0
    if gpus:
        size, per_actor, actor_device = actors or gpus, {"num_gpus": 1}, "cuda"
    else:
        cpus = int(resources.get("CPU", 1))
        size, per_actor, actor_device = actors or max(1, cpus - 1), {"num_cpus": 1}, "cpu"
    return ActorPoolStrategy(size=max(1, size)), per_actor, actor_device


def _error_rows(paths: Sequence[str], prepare: PrepareFile) -> tuple[list, dict[int, str]]:
    """[(index, sample)] for the files that decoded, and {index: reason} for the rest."""
    good, failed = [], {}
    for result in load_each(paths, prepare, num_workers=0):
        if result.error is None:
            good.append((result.index, result.value))
        else:
            failed[result.index] = result.error
    return good, failed


# ---------------------------------------------------------------------------------------- scan


class ScoreBatch:
    """Ray actor: loads the detector once, then turns batches of paths into scan rows."""

    def __init__(
        self,
        detector: str,
        *,
        tries: int | None,
        fpr: float | None,
        batch_size: int,
        device: str,
        pipeline: str | None,
        max_pixels: int | None,
        uncertain_fpr: float | str | None = "auto",
    ) -> None:
        from ldmdetect.detector import Detector

        self.detector = Detector.from_pretrained(detector, device=device, pipeline=pipeline)
        tries = tries or self.detector.config.default_tries
        self.prepare = PrepareFile(self.detector.preparer(tries), None, max_pixels)
        self.rule = self.detector.config.decision_rule(fpr, uncertain_fpr)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        paths = [str(p) for p in batch["path"]]
        good, failed = _error_rows(paths, self.prepare)
        scores: list[float | None] = [None] * len(paths)
        per_class: list[dict[str, float] | None] = [None] * len(paths)
        novel: list[bool | None] = [None] * len(paths)
        classes = self.detector.classes
        families = self.detector.families
        if good:
            indices, samples = zip(*good, strict=True)
            if class_columns(classes):  # more than two classes: p_<class> columns too
                computed, probabilities, flags = self.detector.score_probabilities_novel(
                    samples, self.batch_size
                )
                for i, p in zip(indices, probabilities, strict=True):
                    per_class[i] = dict(zip(classes, map(float, p), strict=True))
                if flags is not None:
                    for i, flag in zip(indices, flags, strict=True):
                        novel[i] = bool(flag)
            else:
                computed = self.detector.score_prepared(samples, self.batch_size)
            for i, s in zip(indices, computed, strict=True):
                scores[i] = float(s)
        rows = [
            scan_row(
                path,
                score,
                failed.get(i, ""),
                self.rule,
                per_class[i],
                novel[i],
                attributes=bool(families),
                family_threshold=self.detector.config.family_threshold,
            )
            for i, (path, score) in enumerate(zip(paths, scores, strict=True))
        ]
        # The local scan's columns, with every p_<class> (and family) column even in a batch
        # of failures, so that all blocks of one scan share a schema.
        family_columns = list(FAMILY_COLUMNS) if families else []
        columns = list(ScanRow.__dataclass_fields__) + family_columns + class_columns(classes)
        values = [row_values(r, columns) for r in rows]
        text = {name for name in ScanRow.__dataclass_fields__ if name != "score"} | {"family"}
        return pa.table(
            {
                name: pa.array(
                    [v[name] for v in values], pa.string() if name in text else pa.float64()
                )
                for name in columns
            }
        )


@dataclass
class RayScanSummary:
    """What a Ray scan wrote: the Parquet directory, counts, and {path: reason} of failures."""

    output: str
    files: int = 0
    flagged: int = 0
    errors: dict[str, str] = field(default_factory=dict)


def ray_scan(
    detector: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    tries: int | None = None,
    fpr: float | None = 0.01,
    uncertain_fpr: float | str | None = "auto",
    batch_size: int = 64,
    device: str = "auto",
    pipeline: str | os.PathLike | None = None,
    actors: int | None = None,
    address: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> RayScanSummary:
    """Score ``paths`` with the detector at ``detector`` (directory or hub id) on Ray Data.

    Writes Parquet files with one row per path (the ``scan`` CSV's columns; ``score`` is null
    where the file failed) under the directory ``output``, which must be new or empty.
    ``batch_size`` counts crops, as in the local engine.
    """
    from ldmdetect.detector import Detector

    output = os.fspath(output)
    _check_empty(output)
    # Fail here, once, rather than in every actor: the detector loads and has the threshold.
    config = Detector.from_pretrained(detector, device="cpu").config
    config.decision_rule(fpr, uncertain_fpr)
    views = tries or config.default_tries
    with ray_session(address) as ray:
        compute, per_actor, actor_device = _pool(ray, actors, device)
        dataset = ray.data.from_items([{"path": os.fspath(p)} for p in paths])
        rows = dataset.map_batches(
            ScoreBatch,
            fn_constructor_kwargs={
                "detector": os.fspath(detector),
                "tries": tries,
                "fpr": fpr,
                "uncertain_fpr": uncertain_fpr,
                "batch_size": batch_size,
                "device": actor_device,
                "pipeline": None if pipeline is None else os.fspath(pipeline),
                "max_pixels": max_pixels,
            },
            batch_size=max(1, batch_size // views),
            batch_format="numpy",
            compute=compute,
            **per_actor,
        )
        rows.write_parquet(output)
    return _summarise(output)


def _check_empty(output: str) -> None:
    """Parquet writers add files to a directory: old rows must not be mixed with new ones."""
    if "://" in output:
        return
    path = Path(output)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{output}: exists and is not an empty directory; choose a new output")


def _summarise(output: str) -> RayScanSummary:
    """Counts and failures, read back from the Parquet files (two small columns)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    table = pds.dataset(output, format="parquet").to_table(columns=["path", "label", "error"])
    failed = table.filter(pc.not_equal(table["error"], ""))
    return RayScanSummary(
        output,
        files=table.num_rows,
        flagged=int(pc.sum(pc.equal(table["label"], "generated")).as_py() or 0),
        errors=dict(zip(failed["path"].to_pylist(), failed["error"].to_pylist(), strict=True)),
    )


# ------------------------------------------------------------------------------------- extract


class ExtractBatch:
    """Ray actor: builds the method's feature step once; each batch of paths -> one new shard
    of the shared cache, plus one status row per path (computed, cached or error)."""

    def __init__(self, config: Any, cache: str, *, batch_size: int, device: str) -> None:
        from ldmdetect.features.cache import FeatureCache
        from ldmdetect.generative.loading import resolve_device

        self.method = methods.get(config.method)
        self.step = self.method.build_features(config, device=resolve_device(device))
        self.prepare = PrepareFile(self.method.prepare(config))
        # Flushed at the end of each batch, never by size, so one batch is one shard. The ids
        # stored when the actor starts are skipped (a resumed run); shards that other actors
        # write later are not re-read, which only matters for one picture under two names.
        self.cache = FeatureCache(cache, settings=self.step.settings(), shard_size=2**62)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        good, failed = _error_rows(paths, self.prepare)
        status = ["error" if i in failed else "cached" for i in range(len(paths))]
        ids = [""] * len(paths)
        pending: list[dict] = []
        for index, sample in good:
            ids[index] = sample["id"]
            if sample["id"] in self.cache or any(p["id"] == sample["id"] for p in pending):
                continue
            status[index] = "computed"
            pending.append(sample)
            if len(pending) >= self.batch_size:
                self.step.add_to(self.method.collate(pending), self.cache)
                pending.clear()
        if pending:
            self.step.add_to(self.method.collate(pending), self.cache)
        self.cache.flush()
        return {
            "path": np.array(paths, dtype=object),
            "id": np.array(ids, dtype=object),
            "status": np.array(status, dtype=object),
            "error": np.array([failed.get(i, "") for i in range(len(paths))], dtype=object),
        }


def ray_extract(
    method_name: str,
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    pipeline: str | os.PathLike,
    revision: str | None = None,
    feature: dict[str, Any] | None = None,
    batch_size: int = 8,
    shard_size: int = 256,
    device: str = "auto",
    actors: int | None = None,
    address: str | None = None,
) -> ExtractSummary:
    """``extract_features`` on Ray Data: the same cache, filled by a pool of actors.

    Resumes like the local engine (ids already stored are skipped). Two actors that meet the
    same picture under two names at the same moment may both store it; the copies are
    identical (each map's noise is seeded by the image id), and readers take either.
    """
    from ldmdetect.features.cache import FeatureCache
    from ldmdetect.io.datasets import resolve_sources

    method = methods.get(method_name)
    if not method.components:
        raise ValueError(f"method {method_name!r} has no generator features to extract")
    config = methods.make_config(
        method, feature=dict(feature or {}), pipeline=pipeline, revision=revision
    )
    # Built lazily (no component is loaded here): it settles the cache's settings, and a
    # cache made with other settings is refused before any actor starts.
    step = method.build_features(config, device="cpu")
    assert step is not None
    FeatureCache(output, settings=step.settings())
    paths = [os.fspath(p) for source in sources for p in resolve_sources(source)]
    summary = ExtractSummary(Path(output), images=len(paths))
    if not paths:
        return summary
    with ray_session(address) as ray:
        compute, per_actor, actor_device = _pool(ray, actors, device)
        rows = ray.data.from_items([{"path": p} for p in paths]).map_batches(
            ExtractBatch,
            fn_constructor_args=(config, os.fspath(output)),
            fn_constructor_kwargs={"batch_size": batch_size, "device": actor_device},
            batch_size=shard_size,
            batch_format="numpy",
            compute=compute,
            **per_actor,
        )
        for batch in rows.select_columns(["path", "status", "error"]).iter_batches(
            batch_format="numpy", batch_size=4096
        ):
            for path, status, error in zip(
                batch["path"], batch["status"], batch["error"], strict=True
            ):
                if status == "error":
                    summary.errors[str(path)] = str(error)
                elif status == "computed":
                    summary.computed += 1
                else:
                    summary.already_cached += 1
    return summary


def scores_by_path(output: str | os.PathLike) -> dict[str, float]:
    """{path: score} from a Ray scan's Parquet output (NaN where the file failed)."""
    import pyarrow.dataset as pds

    table = pds.dataset(os.fspath(output), format="parquet").to_table(columns=["path", "score"])
    return {
        p: (math.nan if s is None else s)
        for p, s in zip(table["path"].to_pylist(), table["score"].to_pylist(), strict=True)
    }
