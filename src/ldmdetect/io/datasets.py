"""Where images come from: folders walked for image files, or CSV manifests listing them."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ldmdetect.io.images import IMAGE_EXTENSIONS


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass
class ImageSearch:
    """What a search for images found: the images, and what it passed over, by name.

    ``files``: image files, sorted and without duplicates (what ``find_images`` returns).
    ``skipped``: files in the folders walked whose extension is not an image extension
    (``IMAGE_EXTENSIONS``), sorted; hidden files are left out, as they are temporary or
    private by convention. ``missing``: paths given that do not exist, in the order given.
    """

    files: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)


def _walk(root: Path, recursive: bool) -> Iterable[Path]:
    """Visible files under `root`, skipping hidden entries and following each real folder once.

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
        yield from (Path(folder, name) for name in filenames if not name.startswith("."))


def search_images(paths: Iterable[str | os.PathLike], *, recursive: bool = True) -> ImageSearch:
    """Like ``find_images``, but nothing given is lost without a word: files that folder walks
    pass over are named in ``skipped`` and paths that do not exist in ``missing`` (no error).

    For scans that must account for every input (a HEIC upload in a folder of JPEGs, a typo on
    the command line) instead of silently scoring fewer files.
    """
    found: dict[str, Path] = {}
    skipped: dict[str, Path] = {}
    missing: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for candidate in _walk(path, recursive):
                key = os.path.abspath(candidate)
                if _is_image_name(candidate.name):
                    found.setdefault(key, candidate)
                else:
                    skipped.setdefault(key, candidate)
        elif path.exists():
            # Named by the user: kept whatever the extension; the decoder has the last word.
            found.setdefault(os.path.abspath(path), path)
        else:
            missing.append(path)
    # A file both named and passed over by a walk is scanned, so it is not reported as skipped.
    passed_over = [path for key, path in skipped.items() if key not in found]
    return ImageSearch(sorted(found.values()), sorted(passed_over), missing)


def find_images(paths: Iterable[str | os.PathLike], *, recursive: bool = True) -> list[Path]:
    """Image files named by `paths`: files are kept whatever their extension (the user chose
    them), folders are searched for image extensions (case-insensitive, hidden entries skipped).

    Sorted and without duplicates, so that runs over the same inputs see the same order. A path
    that does not exist raises ``FileNotFoundError``; ``search_images`` reports it instead.
    """
    search = search_images(paths, recursive=recursive)
    if search.missing:
        raise FileNotFoundError(f"{os.fspath(search.missing[0])}: no such file or directory")
    return search.files


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
