"""The real pool's search index: image embeddings in a FAISS cosine index, saved and reused.

Embedding and indexing are kept apart from the assignment (:mod:`.assign`) and the run's
outputs (:mod:`.run`), so a pool can be indexed once and searched by many runs: the index is
saved with a fingerprint of the pool's files and the embedder, and read back while both are
unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldmdetect.engine.loader import load_each
from ldmdetect.features.embeddings import ImageEmbedder
from ldmdetect.io.datasets import search_images
from ldmdetect.io.files import atomic_path, atomic_write_text

__all__ = ["INDEX_FILE", "POOL_FILE", "PoolIndex", "build_pool_index", "embed_files"]

INDEX_FILE = "index.faiss"
POOL_FILE = "pool.json"


def _faiss():
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            f"SynRIS needs FAISS (a dependency of ldmdetect): pip install faiss-cpu ({err})"
        ) from err
    return faiss


@dataclass
class PoolIndex:
    """The real pool's FAISS index; row i of the index is ``files[i]``."""

    index: Any  # faiss.IndexFlatIP
    files: list[str]
    errors: dict[str, str]
    embedder: dict[str, Any]
    reused: bool


def embed_files(
    embedder: ImageEmbedder,
    paths: Sequence[str | os.PathLike],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """Embed every readable file: (paths embedded, (N, D) float32 unit rows, {path: reason}).

    Files that fail to decode are named in the errors and left out; none stops the run.
    """
    kept: list[str] = []
    chunks: list[np.ndarray] = []
    errors: dict[str, str] = {}
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if pending:
            chunks.append(embedder.embed(torch.stack(pending)).numpy())
            pending.clear()

    results = load_each(
        [str(p) for p in paths],
        embedder.preparer(),
        num_workers=num_workers,
        prefetch=2 * batch_size,
    )
    for result in results:
        if result.error is not None:
            errors[result.path] = result.error
            continue
        kept.append(result.path)
        pending.append(result.value)
        if len(pending) >= batch_size:
            flush()
    flush()
    dim = chunks[0].shape[1] if chunks else 0
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return kept, np.ascontiguousarray(vectors, dtype=np.float32), errors


def _fingerprint(paths: Sequence[str], embedder: Mapping[str, Any]) -> str:
    """Hash of the pool's files (absolute path, size, mtime) and the embedder's id and weights:
    equal hashes mean the saved index holds exactly these images as this embedder sees them."""
    digest = hashlib.sha256()
    digest.update(json.dumps([embedder.get("name"), embedder.get("weights_source")]).encode())
    for path in paths:
        try:
            stat = os.stat(path)
            entry = f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
        except OSError:
            entry = f"{os.path.abspath(path)}\0missing\n"
        digest.update(entry.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def build_pool_index(
    embedder: ImageEmbedder,
    pool: Sequence[str | os.PathLike],
    index_dir: str | os.PathLike,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
) -> PoolIndex:
    """Embed the real pool into a cosine (inner product on unit vectors) FAISS index.

    The index and the pool's file list are saved in ``index_dir`` (``index.faiss``,
    ``pool.json``); a later call with the same files (same paths, sizes and modification
    times) and the same embedder reads them back instead of embedding the pool again.
    """
    faiss = _faiss()
    found = search_images(pool)
    paths = [str(p) for p in found.files]
    missing = {str(p): "no such file or directory" for p in found.missing}
    described = {k: v for k, v in embedder.describe().items() if k != "note"}
    fingerprint = _fingerprint(paths, described)
    folder = Path(index_dir)
    index_path, pool_path = folder / INDEX_FILE, folder / POOL_FILE
    if index_path.is_file() and pool_path.is_file():
        try:
            saved = json.loads(pool_path.read_text())
            if saved.get("fingerprint") == fingerprint:
                index = faiss.read_index(str(index_path))
                if index.ntotal == len(saved["files"]):
                    errors = dict(saved.get("errors") or {}) | missing
                    return PoolIndex(index, list(saved["files"]), errors, described, True)
        except (OSError, ValueError, KeyError, RuntimeError):
            pass  # unreadable or stale: embed afresh and overwrite
    files, vectors, errors = embed_files(
        embedder, paths, batch_size=batch_size, num_workers=num_workers
    )
    if not files:
        raise ValueError("no readable real images in the pool: " + ", ".join(map(str, pool)))
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(index_path) as tmp:
        faiss.write_index(index, str(tmp))
    record = {
        "fingerprint": fingerprint,
        "embedder": described,
        "metric": "cosine (inner product of L2-normalised embeddings)",
        "files": files,
        "errors": errors,
    }
    atomic_write_text(pool_path, json.dumps(record, indent=2) + "\n")
    return PoolIndex(index, files, errors | missing, described, False)
