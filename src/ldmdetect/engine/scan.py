"""Score many files with a detector: batched, parallel decoding, one row per file.

A long scan can keep a journal (``scan(..., journal=PATH)``; the CLI's ``--output`` does):
every finished batch's rows are appended to it as JSON lines, and a rerun with the same
detector and settings takes the rows already there instead of scoring those files again, so
an interrupted scan of a million uploads loses at most the batch in flight.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypedDict

import numpy as np
from tqdm.auto import tqdm

from ldmdetect.attribution import attribute
from ldmdetect.config import DecisionRule, DetectorConfig, fpr_key
from ldmdetect.detector import Detector
from ldmdetect.engine.loader import load_each
from ldmdetect.io.files import atomic_write_text
from ldmdetect.io.images import DEFAULT_MAX_PIXELS, load_image
from ldmdetect.io.perturb import Perturbation
from ldmdetect.io.prompts import genimage_class
from ldmdetect.methods.registry import PrepareImage, Sample

if TYPE_CHECKING:
    from typing_extensions import Unpack


@dataclass(frozen=True)
class PrepareFile:
    """Picklable per-file work for loader workers: decode, perturb, make the method's sample."""

    prepare: PrepareImage
    perturbation: Perturbation | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __call__(self, path: str) -> Sample:
        image = load_image(path, max_pixels=self.max_pixels)
        if self.perturbation is not None:
            image = self.perturbation(image)
        return self.prepare(image, path=path, class_name=genimage_class(path))


class ScoreOptions(TypedDict, total=False):
    """How :func:`score_files` and :func:`score_files_by_class` score: the keywords they pass
    on to :func:`iter_scores`, whose signature holds their defaults."""

    tries: int | None
    perturbation: Perturbation | None
    batch_size: int
    num_workers: int
    max_pixels: int | None
    progress: bool
    desc: str


def score_files(
    detector: Detector, paths: Sequence[str | Path], **options: Unpack[ScoreOptions]
) -> tuple[np.ndarray, dict[str, str]]:
    """Scores for ``paths`` (NaN where a file failed) and {path: reason} for the failures.
    Keywords (:class:`ScoreOptions`) as :func:`iter_scores`."""
    scores, _, errors = score_files_by_class(detector, paths, classes=False, **options)
    return scores, errors


def score_files_by_class(
    detector: Detector,
    paths: Sequence[str | Path],
    *,
    classes: bool = True,
    **options: Unpack[ScoreOptions],
) -> tuple[np.ndarray, np.ndarray | None, dict[str, str]]:
    """:func:`score_files` plus, with ``classes``, each file's per-class probabilities
    (N, K) over ``detector.classes`` from the same pass (NaN rows where a file
    failed); None without."""
    scores, probabilities, _, errors = score_files_novel(
        detector, paths, classes=classes, **options
    )
    return scores, probabilities, errors


def score_files_novel(
    detector: Detector,
    paths: Sequence[str | Path],
    *,
    classes: bool = True,
    **options: Unpack[ScoreOptions],
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, str]]:
    """:func:`score_files_by_class` plus, with ``classes`` and a detector with novelty
    statistics, whether each file is novel to every class it knows (N,) (False where a file
    failed); None otherwise."""
    scores, probabilities, novel, _, errors = _collect(detector, paths, classes, False, options)
    return scores, probabilities, novel, errors


def score_files_embedded(
    detector: Detector, paths: Sequence[str | Path], **options: Unpack[ScoreOptions]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    """:func:`score_files_by_class` plus each file's penultimate embedding (N, D), the mean
    over its views, from the same pass (NaN rows where a file failed): what the novelty rule
    is fitted and calibrated on (:class:`ldmdetect.attribution.Novelty`)."""
    scores, probabilities, _, embeddings, errors = _collect(detector, paths, True, True, options)
    return scores, probabilities, embeddings, errors


def _collect(
    detector: Detector,
    paths: Sequence[str | Path],
    classes: bool,
    embed: bool,
    options: ScoreOptions,
) -> tuple[np.ndarray, Any, Any, Any, dict[str, str]]:
    """One pass of :func:`iter_scores` gathered into arrays indexed like ``paths``: scores,
    then (with ``classes``) per-class probabilities and novelty flags, (with ``embed``)
    embeddings, each NaN/False/None as the public wrappers document; and the failures."""
    scores = np.full(len(paths), math.nan)
    probabilities = np.full((len(paths), len(detector.classes)), math.nan)
    novel = np.zeros(len(paths), dtype=bool)
    has_novelty = False
    rows: dict[int, np.ndarray] = {}
    errors: dict[str, str] = {}
    for batch in iter_scores(detector, paths, classes=classes, embed=embed, **options):
        for index, score, error, *extra in batch:
            if error:
                errors[str(paths[index])] = error
                continue
            scores[index] = score
            if classes:
                probabilities[index] = list(extra[0].values())
                if extra[1] is not None:
                    novel[index], has_novelty = extra[1], True
            if embed:
                rows[index] = extra[2]
    embeddings = None
    if embed:
        width = len(next(iter(rows.values()))) if rows else 0
        embeddings = np.full((len(paths), width), math.nan)
        for index, row in rows.items():
            embeddings[index] = row
    return (
        scores,
        probabilities if classes else None,
        novel if classes and has_novelty else None,
        embeddings,
        errors,
    )


def iter_scores(
    detector: Detector,
    paths: Sequence[str | Path],
    *,
    tries: int | None = None,
    perturbation: Perturbation | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool = False,
    desc: str = "scoring",
    classes: bool = False,
    embed: bool = False,
) -> Iterator[list[tuple]]:
    """Each device batch as it finishes: ``(index into paths, score, "")`` per scored file,
    with ``(index, None, reason)`` for the files that failed since the last batch. With
    ``classes``, a fourth item: {class: probability} (None for a failed file), and a fifth:
    whether the file is novel to every class the detector knows (None without novelty
    statistics or for a failed file; :class:`ldmdetect.attribution.Novelty`); with
    ``embed`` too, a sixth: the file's penultimate embedding (None for a failed file)."""
    tries = tries or detector.config.default_tries
    prepare = PrepareFile(detector.preparer(tries), perturbation, max_pixels)
    pending: list[tuple[int, Sample]] = []
    failed: list[tuple[int, float | None, str]] = []
    # Batches are counted in crops so that 10-try scans keep the same device batch size.
    images_per_batch = max(1, batch_size // tries)

    def flush() -> list[tuple[int, float | None, str]]:
        done = list(failed)
        if pending:
            indices, prepared = zip(*pending, strict=True)
            if classes:
                scores, probabilities, embeddings = detector.score_probabilities_embedded(
                    prepared, batch_size, embed=True if embed else None
                )
                novel = detector.novel(embeddings)
                names = detector.classes
                flags = [None] * len(scores) if novel is None else [bool(n) for n in novel]
                done = [(*f, None, None) + ((None,) if embed else ()) for f in done]
                done += [
                    (i, float(x), "", dict(zip(names, map(float, p), strict=True)), n)
                    + ((e,) if embed else ())
                    for i, x, p, n, e in zip(
                        indices,
                        scores,
                        probabilities,
                        flags,
                        embeddings if embed else [None] * len(scores),
                        strict=True,
                    )
                ]
            else:
                scores = detector.score_prepared(list(prepared), batch_size)
                done += [(i, float(x), "") for i, x in zip(indices, scores, strict=True)]
        pending.clear()
        failed.clear()
        return done

    results = load_each(paths, prepare, num_workers=num_workers, prefetch=2 * images_per_batch)
    for result in tqdm(results, total=len(paths), desc=desc, disable=not progress, unit="img"):
        if result.error is not None:
            failed.append((result.index, None, result.error))
        else:
            pending.append((result.index, result.value))
        if len(pending) >= images_per_batch:
            yield flush()
    if pending or failed:
        yield flush()


@dataclass
class ScanRow:
    """One file's result. ``label``: generated/real at the chosen threshold; ``verdict``:
    generated/uncertain/real with the band between two calibrated thresholds."""

    path: str
    score: float | None
    label: str
    threshold: str
    error: str
    verdict: str = ""


@dataclass
class ClassScanRow(ScanRow):
    """A row of a method of more than two classes: with {class: probability} (CSV columns
    ``p_<class>``). Two-class methods' rows stay :class:`ScanRow`, column for column."""

    probabilities: dict[str, float] | None = None


@dataclass
class FamilyScanRow(ClassScanRow):
    """A row of a detector with a family head: which family made the file (columns
    ``family`` and ``family_score``; see :mod:`ldmdetect.attribution`), empty where the
    file was judged real."""

    family: str = ""
    family_score: float | None = None


#: The columns a family head's rows add (before the ``p_<class>`` ones).
FAMILY_COLUMNS = ("family", "family_score")


def scan_row(
    path: str,
    score: float | None,
    error: str,
    rule: DecisionRule,
    probabilities: dict[str, float] | None = None,
    novel: bool | None = None,
    *,
    attributes: bool = False,
    family_threshold: float | None = None,
) -> ScanRow:
    """One file's row. With ``attributes`` (a family head, its ``probabilities`` over
    ``("real", *families)``), the family of a file labelled generated, "unknown" below
    ``family_threshold`` or where ``novel`` (novel to every known class, whatever the label:
    :func:`ldmdetect.attribution.attribute`)."""
    if error or score is None:
        return ScanRow(path, None, "", rule.threshold_name, error or "no score")
    label, verdict = rule.label(score), rule.verdict(score)
    if probabilities is None:
        return ScanRow(path, score, label, rule.threshold_name, "", verdict)
    if not attributes:
        return ClassScanRow(path, score, label, rule.threshold_name, "", verdict, probabilities)
    (found,) = attribute(
        np.array([list(probabilities.values())]),
        list(probabilities),
        np.array([label == "generated"]),
        family_threshold,
        None if novel is None else np.array([novel]),
    )
    return FamilyScanRow(
        path,
        score,
        label,
        rule.threshold_name,
        "",
        verdict,
        probabilities,
        found.family or "",
        None if found.family is None else found.family_score,
    )


def read_row(fields: dict) -> ScanRow:
    """A row from its JSON fields (a journal line)."""
    if "family" in fields:
        return FamilyScanRow(**fields)
    return ClassScanRow(**fields) if "probabilities" in fields else ScanRow(**fields)


def scan(
    detector: Detector,
    paths: Sequence[str | Path],
    *,
    tries: int | None = None,
    fpr: float | None = 0.01,
    uncertain_fpr: float | str | None = "auto",
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    journal: str | os.PathLike | None = None,
) -> list[ScanRow]:
    """One row per file, in the order of ``paths``: probability, decision at the
    FPR-calibrated threshold, the three-way verdict (see :class:`DecisionRule`; the band's
    lower edge is the threshold at ``uncertain_fpr``), or the error.

    With ``journal``, rows are appended to that file batch by batch, and the rows an
    interrupted scan with the same detector and settings left there are reused (see
    :class:`ScanJournal`); the caller deletes it once the results are safely written.
    """
    rule = detector.config.decision_rule(fpr, uncertain_fpr)
    tries = tries or detector.config.default_tries
    paths = [str(p) for p in paths]
    log = None
    if journal is not None:
        log = ScanJournal(journal, scan_settings(detector, tries, rule))
    rows = dict(log.rows) if log is not None else {}
    todo = [p for p in dict.fromkeys(paths) if p not in rows]
    batches = iter_scores(
        detector,
        todo,
        tries=tries,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        desc="scan",
        classes=len(detector.classes) > 2,
    )
    family = {"attributes": bool(detector.families)}
    if detector.families:
        family["family_threshold"] = detector.config.family_threshold
    for batch in batches:
        finished = [
            scan_row(todo[i], score, error, rule, *more, **family)
            for i, score, error, *more in batch
        ]
        if log is not None:
            log.append(finished)
        rows.update((row.path, row) for row in finished)
    return [rows[p] for p in paths]


def scan_settings(detector: Detector, tries: int, rule: DecisionRule) -> dict[str, object]:
    """What a scan's rows depend on: the detector (a digest of its whole config, which names
    its training run, thresholds and generator components), the tries and the decision rule."""
    config = json.dumps(detector.config.to_dict(), sort_keys=True, default=str)
    return {
        "detector": hashlib.sha256(config.encode()).hexdigest(),
        "tries": tries,
        **rule.describe(),
    }


@dataclass(frozen=True)
class FolderShare:
    """How much of one folder a scan flagged, against what the calibration promises."""

    folder: str
    scored: int
    flagged: int
    share_low_95: float  # one-sided Clopper-Pearson lower bound on the flagged share

    @property
    def share(self) -> float:
        return self.flagged / self.scored if self.scored else 0.0


def folder_shares(rows: Sequence[ScanRow]) -> list[FolderShare]:
    """Per folder of the scanned files: files scored, flagged as generated, and a 95% lower
    bound on the flagged share (so a small folder's chance excess is not called a shift)."""
    from scipy.stats import beta

    counts: dict[str, list[int]] = {}
    for row in rows:
        if row.score is not None:
            tally = counts.setdefault(str(Path(row.path).parent), [0, 0])
            tally[0] += 1
            tally[1] += row.label == "generated"
    return [
        FolderShare(folder, n, k, float(beta.ppf(0.05, k, n - k + 1)) if k else 0.0)
        for folder, (n, k) in sorted(counts.items())
    ]


def calibration_warnings(
    rows: Sequence[ScanRow], config: DetectorConfig, fpr: float | None, min_files: int = 10
) -> list[str]:
    """Folders flagged far more than the threshold's calibrated FPR allows for real images.

    "Far": even the 95% lower bound of the folder's flagged share is above twice the target
    FPR and above the calibration's own 95% upper bound on it. A folder of generated images
    rightly trips this; a folder of real photos that does is a sign that the calibration reals
    do not resemble them, which the message says along with the fix.
    """
    if fpr is None:
        return []
    record = config.calibration.get("thresholds", {}).get(fpr_key(fpr), {})
    allowed = max(2 * fpr, record.get("fpr_upper_95", fpr))
    return [
        f"{share.folder}: {share.flagged} of {share.scored} files ({share.share:.0%}) flagged, "
        f"far above the calibrated FPR of {fpr:g}; if these images are real, the detector's "
        "calibration does not match them: recalibrate on real images like them with "
        "`ldmdetect calibrate --detector DIR --real DIR --output DIR`"
        for share in folder_shares(rows)
        if share.scored >= min_files and share.share_low_95 > allowed
    ]


class ScanJournal:
    """The rows of a scan in progress: a header line with its settings, then one JSON line
    per file, appended (and flushed) batch by batch.

    Reopening it with other settings is an error naming the file, so rows of another
    detector or threshold never mix into a result. A last line cut short by the interruption
    is dropped, and that file is scored again.
    """

    def __init__(self, path: str | os.PathLike, settings: dict[str, object]) -> None:
        self.path = Path(path)
        self.rows: dict[str, ScanRow] = {}
        header = json.dumps({"scan": settings}, sort_keys=True) + "\n"
        lines = self.path.read_text().splitlines(keepends=True) if self.path.is_file() else []
        if lines and lines[0].endswith("\n"):
            if json.loads(lines[0]) != json.loads(header):
                raise ValueError(
                    f"{self.path}: left by an interrupted scan with other settings "
                    f"({lines[0].strip()}); delete it or write to another --output"
                )
            kept = [lines[0]]
            for line in lines[1:]:
                if not line.endswith("\n"):
                    break
                row = read_row(json.loads(line))
                self.rows[row.path] = row
                kept.append(line)
            if len(kept) < len(lines):
                atomic_write_text(self.path, "".join(kept))
        else:  # new, or interrupted before its header was whole
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, header)

    def append(self, rows: Sequence[ScanRow]) -> None:
        if rows:
            with self.path.open("a", encoding="utf-8") as out:
                out.write("".join(json.dumps(asdict(row)) + "\n" for row in rows))


def class_columns(classes: Sequence[str]) -> list[str]:
    """The per-class columns, ``p_<class>`` in ``classes`` order: only methods of more than two
    classes have them, so two-class outputs keep their columns."""
    return [f"p_{c}" for c in classes] if len(classes) > 2 else []


def row_columns(rows: Sequence[ScanRow]) -> list[str]:
    """The columns of a scan's output: :class:`ScanRow`'s fields, ``family`` and
    ``family_score`` where the rows have them (a family head), then one ``p_<class>`` per
    class where the rows carry per-class probabilities (methods of more than two classes)."""
    classes = next((list(r.probabilities) for r in rows if getattr(r, "probabilities", None)), [])
    families = list(FAMILY_COLUMNS) if any(isinstance(r, FamilyScanRow) for r in rows) else []
    return list(ScanRow.__dataclass_fields__) + families + class_columns(classes)


def row_values(row: ScanRow, columns: Sequence[str]) -> dict[str, object]:
    """One row as {column: value}: per-class probabilities flattened into ``p_<class>``
    columns (None where the file failed)."""
    values = asdict(row)
    per_class = values.pop("probabilities", None) or {}
    values.update({f"p_{c}": p for c, p in per_class.items()})
    return {column: values.get(column) for column in columns}


def write_rows(rows: Sequence[ScanRow], output: str | os.PathLike) -> Path:
    """Write scan rows as JSON (``.json``) or CSV (anything else), atomically; both with the
    columns of :func:`row_columns`."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    columns = row_columns(rows)
    if output.suffix.lower() == ".json":
        table = [row_values(r, columns) for r in rows]
        return atomic_write_text(output, json.dumps(table, indent=2) + "\n")
    text = io.StringIO(newline="")
    _write_csv(rows, columns, text)
    return atomic_write_text(output, text.getvalue())


def _write_csv(rows: Sequence[ScanRow], columns: Sequence[str], stream: TextIO) -> None:
    writer = csv.DictWriter(stream, fieldnames=columns)
    writer.writeheader()
    writer.writerows(row_values(r, columns) for r in rows)


# --------------------------------------------------------------------------------------------
# A scan's output, as the command line and scripts write it


def journal_path(output: str | os.PathLike | None) -> Path | None:
    """Where a scan that writes ``output`` journals its finished batches: ``OUTPUT.partial``
    beside it, so that rerunning an interrupted scan finds it. None for rows going to a stream,
    which an interruption loses anyway."""
    if output is None:
        return None
    output = Path(output)
    return output.with_name(output.name + ".partial")


def missing_rows(paths: Iterable[str | os.PathLike]) -> list[ScanRow]:
    """A failed row for each path that does not exist: a scan names it like an undecodable
    file instead of stopping at it."""
    return [ScanRow(str(path), None, "", "", "no such file or directory") for path in paths]


def write_csv(rows: Sequence[ScanRow], stream: TextIO) -> None:
    """Scan rows as CSV to a text stream (a file's text or standard output), with the columns
    of :func:`row_columns`; just a ``path`` header when there are none."""
    _write_csv(rows, row_columns(rows) if rows else ["path"], stream)


def scan_summary(rows: Sequence[ScanRow], fpr: float | None, output: Path | None = None) -> str:
    """One line: files, the share flagged at the threshold used, uncertain and failed ones,
    and where the rows went."""
    scored = [r for r in rows if r.score is not None]
    flagged = sum(r.label == "generated" for r in scored)
    uncertain = sum(r.verdict == "uncertain" for r in scored)
    share = f" ({flagged / len(scored):.1%})" if scored else ""
    target = f" at FPR {fpr:g}" if fpr is not None else " at the raw 0.5 rule"
    return (
        f"{len(rows)} files, {flagged} flagged as generated{share}{target}, {uncertain} "
        f"uncertain, {sum(bool(r.error) for r in rows)} failed"
        + (f" -> {output}" if output is not None else "")
    )
