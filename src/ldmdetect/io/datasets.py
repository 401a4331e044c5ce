"""Where images come from: folders walked for image files, or CSV manifests listing them."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

from ldmdetect.io.images import IMAGE_EXTENSIONS


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(root: Path, recursive: bool) -> Iterable[Path]:
    """Image files under `root`, skipping hidden entries and following each real folder once.

    Symlinked folders are followed because datasets are often assembled from links, but a link
    back up the tree must not loop forever nor list the same files twice.
    """
    seen: set[str] = set()
    for folder, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        # Hidden folders (.git, .cache, .ipynb_checkpoints) hold copies and temporary files.
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        # No stat per file: at millions of files it dominates, and a broken link named .jpg is
        # better reported by the decoder ("file not found") than silently dropped here.
        yield from (Path(folder, name) for name in filenames if _is_image_name(name))


def find_images(paths: Iterable[str | os.PathLike], *, recursive: bool = True) -> list[Path]:
    """Image files named by `paths`: files are kept whatever their extension (the user chose
    them), folders are searched for image extensions (case-insensitive, hidden entries skipped).

    Sorted and without duplicates, so that runs over the same inputs see the same order.
    """
    found: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates: Iterable[Path] = _walk(path, recursive)
        elif path.exists():
            candidates = [path]
        else:
            raise FileNotFoundError(f"{os.fspath(raw)}: no such file or directory")
        for candidate in candidates:
            found.setdefault(os.path.abspath(candidate), candidate)
    return sorted(found.values())


def read_manifest(csv_path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a CSV manifest with a 'path' column; other columns (label, generator...) are kept.

    Relative paths are resolved against the CSV's own folder, not the working directory, so a
    dataset folder with its manifest can be moved or shared as one unit.
    """
    csv_path = Path(csv_path)
    base = csv_path.parent
    # utf-8-sig: spreadsheets often write a byte-order mark that would corrupt the first header.
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [column.strip() for column in next(reader, [])]
        if "path" not in header:
            found = ", ".join(repr(c) for c in header) or "no header"
            raise ValueError(f"{csv_path}: manifest needs a 'path' column (found {found})")
        rows = []
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                raise ValueError(
                    f"{csv_path}, line {reader.line_num}: {len(record)} fields, "
                    f"the header has {len(header)}"
                )
            row = dict(zip(header, record, strict=True))
            if not row["path"].strip():
                raise ValueError(f"{csv_path}, line {reader.line_num}: empty 'path'")
            row["path"] = os.path.abspath(base / row["path"].strip())
            rows.append(row)
    return rows


def resolve_sources(source: str | os.PathLike) -> list[Path]:
    """Image paths from one source: a .csv manifest's paths, else `find_images([source])`."""
    path = Path(source)
    if path.suffix.lower() == ".csv" and not path.is_dir():
        return [Path(row["path"]) for row in read_manifest(path)]
    return find_images([path])
