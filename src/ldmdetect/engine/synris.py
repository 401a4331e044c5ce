"""SynRIS: pair every generated image with the real photo that looks most like it.

FakeInversion (Cazenavette et al., CVPR 2024) evaluates detectors on fakes next to real images
found by reverse image search for each fake, so that a detector cannot score well by telling
themes apart (generated cats vs. a real set of street scenes). This module is a local reverse
image search:

1. embed the real pool (``ldmdetect.features.embeddings``; CLIP by default) into a FAISS
   inner-product index over unit vectors, i.e. cosine similarity, saved as ``index.faiss`` with
   the pool's file list (``pool.json``) and reused while the pool and the embedder are the same;
2. embed the fakes and look up each one's nearest reals;
3. assign: with ``allow_reuse`` every fake gets its nearest real; otherwise a real is used at
   most once, assigned greedily by descending similarity (see :func:`greedy_assignment`);
4. write ``pairs.csv`` (fake, real, similarity), ``contact_sheet.png`` and ``synris.json``.

Pairs can also be given as JSONL (``{"fake": path, "real": path_or_url}`` per line, e.g. a
released SynRIS list); nothing is downloaded: entries that are null, missing, URLs, unreadable
or not images are skipped and counted by reason.

``ldmdetect evaluate --pairs pairs.csv`` then reports the detector's AUC on the matched reals
next to its AUC on an unmatched real set (:func:`ldmdetect.engine.evaluate.evaluate`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from ldmdetect.engine.loader import load_each
from ldmdetect.features.embeddings import ImageEmbedder, load_embedder
from ldmdetect.io.datasets import search_images
from ldmdetect.io.files import atomic_path, atomic_write_text
from ldmdetect.io.images import load_image
from ldmdetect.io.pairs import Pair, read_pairs_csv, write_pairs_csv

__all__ = [
    "GivenPairs",
    "Pair",
    "PoolIndex",
    "SynRISConfig",
    "SynRISResult",
    "SynRISRow",
    "build_pool_index",
    "embed_files",
    "greedy_assignment",
    "read_pairs_csv",
    "read_pairs_jsonl",
    "run_synris",
    "synris_row",
    "write_contact_sheet",
    "write_pairs_csv",
]

INDEX_FILE = "index.faiss"
POOL_FILE = "pool.json"
PAIRS_FILE = "pairs.csv"
SHEET_FILE = "contact_sheet.png"
SUMMARY_FILE = "synris.json"


def _faiss():
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            f"SynRIS needs FAISS (a dependency of ldmdetect): pip install faiss-cpu ({err})"
        ) from err
    return faiss


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
class PoolIndex:
    """The real pool's FAISS index; row i of the index is ``files[i]``."""

    index: Any  # faiss.IndexFlatIP
    files: list[str]
    errors: dict[str, str]
    embedder: dict[str, Any]
    reused: bool


@dataclass
class SynRISResult:
    """What a run wrote and found. ``errors``: {path: reason} for files skipped in either set;
    ``skipped``: {reason: count} for given pairs that were dropped (JSONL input)."""

    pairs: list[Pair]
    files: dict[str, Path]
    summary: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


# --- embedding ------------------------------------------------------------------------------


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


# --- assignment -----------------------------------------------------------------------------


def greedy_assignment(
    similarities: np.ndarray, candidates: np.ndarray, n_real: int
) -> tuple[np.ndarray, np.ndarray]:
    """One distinct real per fake, by descending similarity, from each fake's candidate list.

    ``similarities``/``candidates``: (n_fake, k) nearest reals per fake as FAISS returns them
    (candidate -1 = none). All (fake, real) candidate pairs are taken from the most similar
    down, each kept when neither side is matched yet. Returns (real index, similarity) per
    fake, -1 / NaN where all of a fake's candidates went to others (the caller fetches more).

    Greedy rather than an optimal assignment (scipy's ``linear_sum_assignment``): it never
    gives up a near-duplicate pair to raise the total similarity, which is the point of the
    protocol (each fake next to its closest look-alike still free), and it runs on the
    k-nearest candidate lists a large pool needs instead of a dense n_fake x n_real matrix.
    """
    n_fake, k = candidates.shape
    order = np.argsort(-similarities, axis=None, kind="stable")
    real_of = np.full(n_fake, -1, dtype=np.int64)
    sim_of = np.full(n_fake, math.nan, dtype=np.float64)
    taken = np.zeros(n_real, dtype=bool)
    left = n_fake
    for flat in order:
        fake, slot = divmod(int(flat), k)
        real = int(candidates[fake, slot])
        if real < 0 or real_of[fake] >= 0 or taken[real]:
            continue
        real_of[fake], sim_of[fake] = real, float(similarities[fake, slot])
        taken[real] = True
        left -= 1
        if left == 0:
            break
    return real_of, sim_of


def _match(
    pool: PoolIndex, fakes: np.ndarray, allow_reuse: bool, candidates: int
) -> tuple[np.ndarray, np.ndarray]:
    n_real, n_fake = pool.index.ntotal, fakes.shape[0]
    if allow_reuse:
        sims, ids = pool.index.search(fakes, 1)
        return ids[:, 0].astype(np.int64), sims[:, 0].astype(np.float64)
    if n_fake > n_real:
        raise ValueError(
            f"{n_fake} fakes but only {n_real} readable reals in the pool: each real can be "
            "matched once; add reals or allow reuse (--allow-reuse)"
        )
    k = min(n_real, max(1, candidates))
    while True:
        sims, ids = pool.index.search(fakes, k)
        real_of, sim_of = greedy_assignment(sims, ids, n_real)
        # Fakes whose k candidates all went to others need a longer list; with k = n_real
        # every fake finds a free real, since there are at least as many reals as fakes.
        if (real_of >= 0).all() or k == n_real:
            return real_of, sim_of
        k = min(n_real, 4 * k)


# --- files ----------------------------------------------------------------------------------


def _tile(path: str, size: int):
    from PIL import Image

    try:
        image = load_image(path)
        image.thumbnail((size, size), Image.Resampling.BICUBIC)
    except Exception:  # a file that vanished since: grey tile, the sheet is only a preview
        image = Image.new("RGB", (size, size), (128, 128, 128))
    tile = Image.new("RGB", (size, size), (255, 255, 255))
    tile.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return tile


def write_contact_sheet(
    pairs: Sequence[Pair], path: str | os.PathLike, *, count: int = 8, thumb_size: int = 160
) -> Path:
    """A PNG with one row per sample pair: fake | matched real, similarity and names below.

    The sample runs from the most to the least similar pair (evenly spaced), so a glance
    shows both how good the best matches are and how loose the worst ones get.
    """
    from PIL import Image, ImageDraw

    if not pairs:
        raise ValueError("no pairs to draw")
    ranked = sorted(pairs, key=lambda p: -p.similarity if not math.isnan(p.similarity) else 1)
    picks = np.unique(np.linspace(0, len(ranked) - 1, min(count, len(ranked))).round())
    sample = [ranked[int(i)] for i in picks]
    caption, pad = 28, 6
    width = 2 * thumb_size + 3 * pad
    height = len(sample) * (thumb_size + caption + pad) + pad + 18
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 3), "fake | matched real (cosine similarity)", fill=(0, 0, 0))
    y = pad + 18
    for pair in sample:
        sheet.paste(_tile(pair.fake, thumb_size), (pad, y))
        sheet.paste(_tile(pair.real, thumb_size), (2 * pad + thumb_size, y))
        names = f"{Path(pair.fake).name[:22]} | {Path(pair.real).name[:22]}"
        draw.text((pad, y + thumb_size + 2), f"similarity {pair.similarity:.3f}", fill=(0, 0, 0))
        draw.text((pad, y + thumb_size + 14), names, fill=(80, 80, 80))
        y += thumb_size + caption + pad
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(path)


# --- given pairs (JSONL) --------------------------------------------------------------------


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


# --- the run --------------------------------------------------------------------------------


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
        real_of, sim_of = _match(pool, vectors, config.allow_reuse, config.candidates)
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


# --- evaluation row for the demo ------------------------------------------------------------


@dataclass
class SynRISRow:
    """A detector's AUC on SynRIS-matched reals next to an unmatched real set.

    ``matched`` / ``unmatched``: ``compute_metrics`` dicts (same fakes, different reals);
    ``intervals``: bootstrap intervals of each; ``seconds``: search and scoring time.
    """

    synris: SynRISResult
    matched: dict[str, float]
    unmatched: dict[str, float]
    intervals: dict[str, Any]
    seconds: dict[str, float]
    report: dict[str, Any]

    def table_rows(self, label: str, columns: Sequence[str] = ("auc", "ap", "tpr@fpr=0.01")):
        """Rows for a summary table: ``{label / SynRIS-matched reals: {...}, ...}``."""
        return {
            f"{label} / SynRIS-matched reals": {c: self.matched[c] for c in columns},
            f"{label} / unmatched reals": {c: self.unmatched[c] for c in columns},
        }


def synris_row(
    detector,
    fakes: Sequence[str | os.PathLike],
    pool: Sequence[str | os.PathLike],
    real: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    embedder: str | ImageEmbedder = "timm:tf_efficientnet_lite0",
    allow_reuse: bool = True,
    tries: int = 1,
    batch_size: int = 64,
    num_workers: int = 0,
    n_boot: int = 1000,
) -> SynRISRow:
    """Match ``fakes`` against ``pool`` and evaluate ``detector`` on matched vs. ``real`` reals.

    For a demo: the pool is small (e.g. a dozen photos for 48 fakes), so reuse is allowed by
    default; the offline embedder is the default so results do not depend on network access.
    Writes the SynRIS outputs to ``output/synris`` and the evaluation report (with its synris
    section) to ``output/report``.
    """
    from ldmdetect.engine.evaluate import evaluate

    out = Path(output)
    start = time.perf_counter()
    loaded = embedder if isinstance(embedder, ImageEmbedder) else None
    config = SynRISConfig(
        embedder=embedder if isinstance(embedder, str) else embedder.name,
        allow_reuse=allow_reuse,
        batch_size=batch_size,
        num_workers=num_workers,
    )
    found = run_synris(out / "synris", fake=fakes, real_pool=pool, config=config, embedder=loaded)
    search_seconds = time.perf_counter() - start
    tick = time.perf_counter()
    evaluation = evaluate(
        detector,
        real,
        {},
        pairs=found.files["pairs"],
        tries=(tries,),
        batch_size=batch_size,
        num_workers=num_workers,
        output=out / "report",
        n_boot=n_boot,
    )
    section = evaluation.result["synris"]
    seconds = {
        "synris": search_seconds,
        "evaluate": time.perf_counter() - tick,
        "total": time.perf_counter() - start,
    }
    return SynRISRow(
        found,
        section["matched"],
        section["unmatched"],
        section["intervals"],
        seconds,
        section,
    )
