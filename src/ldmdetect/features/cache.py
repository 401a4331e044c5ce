"""Sharded, atomic, resumable store of per-image feature tensors.

Feature extraction (LaRE maps, DDIM inversions, AEROBLADE distances) costs UNet passes per
image, so it is done once and cached. Entries are buffered and written as whole safetensors
shards (temp file + rename): an interrupted run loses at most one unwritten shard, and a rerun
skips every id already stored. The settings that produced the features are pinned in
``cache.json``; reopening with different settings is an error, so a stale cache is never
mixed with fresh features.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ldmdetect.io.files import atomic_path, atomic_write_text

INFO_NAME = "cache.json"
FORMAT_VERSION = 1


class FeatureCache:
    """``cache[id] = {"name": tensor}`` / ``cache[id]`` / ``id in cache``, stored in shards."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        settings: Mapping[str, Any] | None = None,
        shard_size: int = 512,
    ) -> None:
        if shard_size < 1:
            raise ValueError("shard_size must be at least 1")
        self.root = Path(root)
        self.shard_size = shard_size
        # settings=None reopens an existing cache with whatever it was written with (to read).
        info_path = self.root / INFO_NAME
        if settings is None and info_path.is_file():
            settings = json.loads(info_path.read_text()).get("settings", {})
        self.settings = _jsonable(settings or {})
        self._check_or_write_info()
        self._where: dict[str, Path] = {}
        for shard in sorted(self.root.glob("shard-*.safetensors")):
            for key in _shard_ids(shard):
                self._where[key] = shard
        self._pending: dict[str, dict[str, torch.Tensor]] = {}
        self._open: tuple[Path, Any] | None = None

    def _check_or_write_info(self) -> None:
        info_path = self.root / INFO_NAME
        info = {"format": FORMAT_VERSION, "settings": self.settings}
        if info_path.is_file():
            stored = json.loads(info_path.read_text())
            if stored != info:
                raise ValueError(
                    f"{self.root}: the cache was written with other settings "
                    f"({stored.get('settings')}); use a new cache directory for {self.settings}"
                )
            return
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")

    def __contains__(self, key: str) -> bool:
        return key in self._where or key in self._pending

    def __len__(self) -> int:
        return len(self._where) + len(self._pending)

    def keys(self) -> Iterator[str]:
        yield from self._where
        yield from self._pending

    def __setitem__(self, key: str, tensors: Mapping[str, torch.Tensor]) -> None:
        if key in self:
            raise KeyError(f"{key!r} is already cached")
        if not tensors or any("/" in name for name in tensors):
            raise ValueError("entries need at least one tensor and names without '/'")
        self._pending[key] = {n: t.detach().cpu().contiguous() for n, t in tensors.items()}
        if len(self._pending) >= self.shard_size:
            self.flush()

    def __getitem__(self, key: str) -> dict[str, torch.Tensor]:
        if key in self._pending:
            return dict(self._pending[key])
        if key not in self._where:
            raise KeyError(key)
        shard = self._where[key]
        if self._open is None or self._open[0] != shard:
            self._open = (shard, safe_open(str(shard), framework="pt"))
        handle = self._open[1]
        index = json.loads(handle.metadata()["ids"]).index(key)
        prefix = f"{index}/"
        return {
            name[len(prefix) :]: handle.get_tensor(name)
            for name in handle.keys()  # noqa: SIM118  (safe_open handles are not iterable)
            if name.startswith(prefix)
        }

    def flush(self) -> None:
        """Write buffered entries as one new shard, atomically."""
        if not self._pending:
            return
        ids = list(self._pending)
        tensors = {
            f"{i}/{name}": tensor
            for i, key in enumerate(ids)
            for name, tensor in self._pending[key].items()
        }
        # Unique names, not counters: several workers may add shards to one cache at once.
        shard = self.root / f"shard-{uuid.uuid4().hex[:16]}.safetensors"
        with atomic_path(shard) as tmp:
            save_file(tensors, str(tmp), metadata={"ids": json.dumps(ids)})
        for key in ids:
            self._where[key] = shard
        self._pending.clear()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def _shard_ids(shard: Path) -> list[str]:
    with safe_open(str(shard), framework="pt") as handle:
        return json.loads(handle.metadata()["ids"])


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))
