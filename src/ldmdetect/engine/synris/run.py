"""One SynRIS run: index the pool (or read given pairs), match, and write the outputs.

Writes ``pairs.csv`` (fake, real, similarity), ``contact_sheet.png`` and ``synris.json``; in
search mode the pool's ``index.faiss`` + ``pool.json`` too, reused by the next run over the
same pool.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ldmdetect.engine.synris.assign import match_to_pool
from ldmdetect.engine.synris.index import INDEX_FILE, POOL_FILE, build_pool_index, embed_files
from ldmdetect.engine.synris.pairs import read_pairs_jsonl
from ldmdetect.engine.synris.sheet import SHEET_FILE, write_contact_sheet
from ldmdetect.features.embeddings import ImageEmbedder, load_embedder
from ldmdetect.io.datasets import search_images
from ldmdetect.io.files import atomic_write_text
from ldmdetect.io.pairs import Pair, write_pairs_csv

__all__ = ["PAIRS_FILE", "SUMMARY_FILE", "SynRISConfig", "SynRISResult", "run_synris"]

PAIRS_FILE = "pairs.csv"
SUMMARY_FILE = "synris.json"


@dataclass
class SynRISConfig:
    """Settings of one SynRIS run.

    ``embedder``: an id for :func:`ldmdetect.features.embeddings.load_embedder` (``auto`` =
    CLIP ViT-B/32 with OpenAI weights, offline the ImageNet EfficientNet-Lite0).
    ``allow_reuse``: let several fakes share one real (needed when the pool is smaller than
    the fakes). ``candidates``: nearest reals looked up per fake before the assignment (more are
    fetched for fakes whose candidates were all taken). ``sheet_pairs``: pairs on the contact
    sheet, spread from the most to the least similar.
    """

    embedder: str = "auto"
    allow_reuse: bool = False
    candidates: int = 32
    batch_size: int = 32
    num_workers: int = 0
    device: str = "auto"  # the embedder's; "auto": CUDA when available
    sheet_pairs: int = 8
    thumb_size: int = 160


@dataclass
class SynRISResult:
    """What a run wrote and found. ``errors``: {path: reason} for files skipped in either set;
    ``skipped``: {reason: count} for given pairs that were dropped (JSONL input)."""

    pairs: list[Pair]
    files: dict[str, Path]
    summary: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


def _summary(
    embedder: ImageEmbedder,
    config: SynRISConfig,
    pairs: Sequence[Pair],
    errors: Mapping[str, str],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    sims = np.array([p.similarity for p in pairs], dtype=np.float64)
    reals = Counter(p.real for p in pairs)
    return {
        "embedder": embedder.describe(),
        "similarity": "cosine of L2-normalised image embeddings",
        "allow_reuse": config.allow_reuse,
        "n_pairs": len(pairs),
        "n_distinct_reals": len(reals),
        "max_uses_of_one_real": max(reals.values(), default=0),
        "similarity_mean": float(np.nanmean(sims)) if sims.size else None,
        "similarity_min": float(np.nanmin(sims)) if sims.size else None,
        **extra,
        "errors": dict(errors),
    }


def run_synris(
    output: str | os.PathLike,
    *,
    fake: Sequence[str | os.PathLike] = (),
    real_pool: Sequence[str | os.PathLike] = (),
    pairs_jsonl: str | os.PathLike | None = None,
    config: SynRISConfig | None = None,
    embedder: ImageEmbedder | None = None,
) -> SynRISResult:
    """Match fakes to a real pool (or read given pairs) and write the SynRIS outputs.

    Either ``fake`` + ``real_pool`` (folders or files; search mode) or ``pairs_jsonl`` (given
    pairs). Writes into ``output``: ``pairs.csv`` (absolute paths), ``contact_sheet.png``,
    ``synris.json`` (embedder, assignment, counts, skipped files) and, in search mode, the
    pool's ``index.faiss`` + ``pool.json``, reused by the next run over the same pool.
    Files that cannot be read in either set are named in ``errors`` and skipped.
    """
    config = config or SynRISConfig()
    if (pairs_jsonl is None) == (not fake):
        raise ValueError("give either fake images (with a real pool) or a pairs JSONL, not both")
    if pairs_jsonl is None and not real_pool:
        raise ValueError("a real pool is needed to search for matches (--real-pool)")
    out = Path(output)
    start = time.perf_counter()
    embedder = embedder or load_embedder(config.embedder, config.device)
    seconds: dict[str, float] = {"load_embedder": time.perf_counter() - start}
    errors: dict[str, str] = {}
    skipped: dict[str, int] = {}
    if pairs_jsonl is None:
        tick = time.perf_counter()
        pool = build_pool_index(
            embedder,
            real_pool,
            out,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
        )
        seconds["index_pool"] = time.perf_counter() - tick
        tick = time.perf_counter()
        found = search_images(fake)
        errors.update({str(p): "no such file or directory" for p in found.missing})
        fake_files, vectors, fake_errors = embed_files(
            embedder,
            found.files,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
        )
        errors.update(fake_errors)
        errors.update(pool.errors)
        if not fake_files:
            raise ValueError("no readable fake images in " + ", ".join(map(str, fake)))
        real_of, sim_of = match_to_pool(pool, vectors, config.allow_reuse, config.candidates)
        seconds["search"] = time.perf_counter() - tick
        pairs = [
            Pair(os.path.abspath(f), os.path.abspath(pool.files[r]), float(s))
            for f, r, s in zip(fake_files, real_of, sim_of, strict=True)
        ]
        extra = {
            "mode": "search",
            "assignment": "top-1 per fake (reuse allowed)"
            if config.allow_reuse
            else "greedy by descending similarity, each real at most once",
            "n_pool": len(pool.files),
            "index_reused": pool.reused,
            "non_image_files": [str(p) for p in (*found.skipped,)],
        }
    else:
        tick = time.perf_counter()
        given = read_pairs_jsonl(pairs_jsonl)
        skipped = given.counts
        files = sorted({p for pair in given.pairs for p in pair})
        kept, vectors, file_errors = embed_files(
            embedder, files, batch_size=config.batch_size, num_workers=config.num_workers
        )
        errors.update(file_errors)
        row = {path: i for i, path in enumerate(kept)}
        pairs = []
        for fake_path, real_path in given.pairs:
            bad = [p for p in (fake_path, real_path) if p not in row]
            if bad:
                skipped["unreadable or not an image"] = (
                    skipped.get("unreadable or not an image", 0) + 1
                )
                continue
            similarity = float(vectors[row[fake_path]] @ vectors[row[real_path]])
            pairs.append(Pair(os.path.abspath(fake_path), os.path.abspath(real_path), similarity))
        if not pairs:
            raise ValueError(f"{pairs_jsonl}: no usable pairs (skipped: {skipped})")
        seconds["read_pairs"] = time.perf_counter() - tick
        extra = {
            "mode": "given pairs",
            "pairs_jsonl": str(pairs_jsonl),
            "skipped_entries": skipped,
            "skipped_lines": [{"line": n, "reason": r} for n, r in given.skipped],
        }
    tick = time.perf_counter()
    files = {"pairs": write_pairs_csv(pairs, out / PAIRS_FILE)}
    files["contact_sheet"] = write_contact_sheet(
        pairs, out / SHEET_FILE, count=config.sheet_pairs, thumb_size=config.thumb_size
    )
    seconds["write"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - start
    summary = _summary(embedder, config, pairs, errors, extra) | {"seconds": seconds}
    files["summary"] = atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    if pairs_jsonl is None:
        files["index"], files["pool"] = out / INDEX_FILE, out / POOL_FILE
    return SynRISResult(pairs, files, summary, errors, skipped)
