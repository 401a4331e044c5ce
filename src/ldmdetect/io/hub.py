"""Where a model comes from: a local path or a hub repo id, told apart by one rule, and one kind
of error, in one line, when it cannot be had.

Everything the project loads by name (generator components, captioners, autoencoders,
detectors, timm and open_clip weights) goes through :func:`is_local_source` to decide where to
look and through :func:`source_error` to say what went wrong. Users type the same kind of
string everywhere (``--pipeline``, ``--detector``, ``--captioner blip2:...``), so the same string
must mean the same thing everywhere, and a failure must read the same whichever loader hit it.

The rule (:func:`is_local_source`), in order:

0. a ``pathlib.Path`` (any ``os.PathLike``) is local: its type already says so;
1. a path that exists (after ``~`` expansion) is local;
2. a repo id the hub accepts (``name`` or ``owner/name``: letters, digits, ``-``, ``_``,
   ``.``; checked by ``huggingface_hub``'s own ``validate_repo_id``) is a hub id;
3. anything else is a local path: absolute paths, ``~``, ``./`` and ``../``, drive letters
   and backslashes (``C:\\models``), two or more slashes (``runs/demo/detector``).

So ``runs/x``, when no such folder exists, reads as the hub repo ``runs/x``, as
``from_pretrained`` in diffusers and transformers reads it; the error then says that no local
path by that name exists either, so a mistyped folder is not mistaken for a network problem.
Write ``./runs/x`` to mean a folder unambiguously.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import Any

__all__ = [
    "OFFLINE_REASON",
    "SourceUnavailable",
    "cached_hub_file",
    "hub_kwargs",
    "hub_offline",
    "hub_reachable",
    "is_local_source",
    "location",
    "resolve_directory",
    "source_error",
]

_TRUE = {"1", "true", "yes", "on"}
#: The reason loaders give when the hub may not be asked and its cache lacks the files.
OFFLINE_REASON = "offline (HF_HUB_OFFLINE) and not in the local hub cache"


class SourceUnavailable(RuntimeError):
    """A model, its weights or a detector could not be loaded from the path or hub id named.

    The message is one line: what, from where, why, and what to do instead. Loaders raise
    subclasses (``ComponentLoadError``, ``DetectorLoadError``, ...) so callers can catch one
    type.
    """


def is_local_source(source: str | os.PathLike) -> bool:
    """True when ``source`` names a local path, False when it is a hub repo id (see the module
    docstring for the rule)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(source, str):
        return True
    text = source
    if not text or Path(text).expanduser().exists():
        return True
    if text.startswith(("/", "~", ".")) or "\\" in text or ":" in text or text.count("/") > 1:
        return True
    try:
        validate_repo_id(text)
    except HFValidationError:
        return True
    return False


def location(source: str | os.PathLike) -> str:
    """What ``from_pretrained`` should be given: the expanded local path, or the hub id."""
    text = os.fspath(source)
    return str(Path(text).expanduser()) if is_local_source(text) else text


def hub_offline() -> bool:
    """Whether the hub must not be asked (``HF_HUB_OFFLINE``), read now rather than when
    ``huggingface_hub`` was imported, so a setting made later still holds."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def hub_kwargs(revision: str | None = None) -> dict[str, Any]:
    """Keyword arguments for any ``from_pretrained`` / ``load_config``: the revision, and
    ``local_files_only`` when :func:`hub_offline`, so the cache is read without network
    retries even when ``HF_HUB_OFFLINE`` was set after ``huggingface_hub`` was imported."""
    kwargs: dict[str, Any] = {"revision": revision} if revision else {}
    if hub_offline():
        kwargs["local_files_only"] = True
    return kwargs


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the model hub answers within ``timeout`` s; False at once when set offline.

    Ask before a download that has a fallback: offline, ``huggingface_hub`` retries for tens of
    seconds before it gives up.
    """
    from huggingface_hub import constants

    if hub_offline():
        return False
    try:
        request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except OSError as err:
        return hasattr(err, "code")  # an HTTP error status still means the hub answered


def cached_hub_file(
    repo_id: str, filenames: tuple[str, ...], *, revision: str | None = None
) -> str | None:
    """The local hub cache's copy of the first of ``filenames`` in ``repo_id``, or None.

    Reads the cache only, never the network: what a loader may use when :func:`hub_offline`.
    """
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
        if isinstance(found, str):
            return found
    return None


def _first_line(reason: str | BaseException) -> str:
    text = str(reason).strip()
    if not text and isinstance(reason, BaseException):
        return type(reason).__name__
    return text.splitlines()[0].rstrip(".") if text else "unknown error"


def source_error(
    what: str,
    source: str | os.PathLike,
    reason: str | BaseException,
    *,
    fix: str | None = None,
    local: bool | None = None,
    error: type[SourceUnavailable] = SourceUnavailable,
) -> SourceUnavailable:
    """The one-line error every loader raises: ``cannot load WHAT from SOURCE: REASON. FIX``.

    ``local`` defaults to :func:`is_local_source` of ``source``; ``reason`` may be the caught
    exception (its first line is kept); ``fix`` replaces the default advice, which for a hub id
    is to pass a local copy or go online. Returns the error (of type ``error``) to raise.
    """
    text = os.fspath(source)
    is_local = is_local_source(text) if local is None else local
    if is_local:
        where = f"the local path '{text}'"
        advice = fix or "Pass an existing directory that holds it."
    else:
        where = f"the hub id '{text}' (no local path by that name; offline or not on the hub)"
        advice = fix or (
            f"Pass a local directory that holds it (fetch it where the hub is reachable, e.g. "
            f"`hf download {text} --local-dir DIR`), or go online and unset HF_HUB_OFFLINE."
        )
    return error(f"cannot load {what} from {where}: {_first_line(reason)}. {advice}")


def resolve_directory(
    source: str | os.PathLike,
    *,
    what: str,
    revision: str | None = None,
    allow_patterns: list[str] | None = None,
    error: type[SourceUnavailable] = SourceUnavailable,
) -> Path:
    """A local directory for ``source``: the directory itself, or the hub repo's snapshot.

    Offline (:func:`hub_offline`) only the local hub cache is read. Raises ``error`` (see
    :func:`source_error`) when the directory does not exist or the hub cannot provide it.
    """
    text = os.fspath(source)
    if is_local_source(text):
        path = Path(text).expanduser()
        if not path.is_dir():
            reason = "not a directory" if path.exists() else "no such directory"
            raise source_error(what, text, reason, local=True, error=error)
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                text,
                revision=revision,
                allow_patterns=allow_patterns,
                local_files_only=hub_offline(),
            )
        )
    except Exception as err:  # the hub raises many types; all mean "could not get it"
        reason = OFFLINE_REASON if hub_offline() else err
        raise source_error(what, text, reason, local=False, error=error) from err
