"""Given pairs: read ``{"fake": path, "real": path_or_url}`` JSONL (e.g. a released SynRIS list).

Nothing is downloaded: entries that are null, missing, URLs or not files are skipped and
counted by reason, so a partly unavailable list still yields the pairs it can.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["GivenPairs", "read_pairs_jsonl"]


@dataclass
class GivenPairs:
    """Pairs read from JSONL: ``pairs`` as (fake, real) paths; ``skipped`` as
    (line number, reason) per dropped entry; ``counts`` the dropped entries by reason."""

    pairs: list[tuple[str, str]]
    skipped: list[tuple[int, str]]

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(_skip_reason(reason) for _, reason in self.skipped))


def _local_path(value: Any, base: Path, role: str) -> tuple[str | None, str | None]:
    """(path, None) for a usable local reference, else (None, reason)."""
    if value is None:
        return None, f"{role} is null"
    if not isinstance(value, str) or not value.strip():
        return None, f"{role} is not a path"
    parsed = urlparse(value)
    if parsed.scheme == "file":
        value = parsed.path
    elif parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive
        local = base / value
        if local.is_file():
            return str(local), None
        return None, f"{role} is a URL (not fetched: no download): {value}"
    path = Path(value)
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        return None, f"{role} file missing: {path}"
    return str(path), None


def read_pairs_jsonl(path: str | os.PathLike) -> GivenPairs:
    """Read ``{"fake": ..., "real": ...}`` lines; relative paths are relative to the file.

    Nothing is fetched: an ``http(s)://`` (or any non-file) URL is skipped with its reason
    unless a local file of that relative name exists; ``file://`` URLs are local paths. Lines
    that are blank are ignored; lines that are not JSON objects, and entries whose fake or
    real is null, missing or not a file, are skipped and counted. Whether the files decode is
    checked when they are embedded (:func:`run_synris`).
    """
    path = Path(path)
    base = path.parent
    pairs: list[tuple[str, str]] = []
    skipped: list[tuple[int, str]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                skipped.append((number, "not JSON"))
                continue
            if not isinstance(entry, dict):
                skipped.append((number, "not a JSON object"))
                continue
            fake, fake_reason = _local_path(entry.get("fake"), base, "fake")
            real, real_reason = _local_path(entry.get("real"), base, "real")
            reason = fake_reason or real_reason
            if reason:
                skipped.append((number, reason))
            else:
                pairs.append((fake, real))
    return GivenPairs(pairs, skipped)


def _skip_reason(reason: str) -> str:
    """The category of a skip reason, for counting: ``"real is a URL (...)"`` -> that head."""
    return reason.split(":")[0].split(" (")[0]
