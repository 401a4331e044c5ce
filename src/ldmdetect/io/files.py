"""Atomic file writes: every file the project writes goes through here.

A file is written under a temporary name in its own folder and renamed over the target with
``os.replace``, which is atomic on POSIX and Windows when both names are on one filesystem. A
reader, or a resumed run that checks ``path.is_file()``, therefore sees the old file or the
whole new one, never half of one; if writing fails the temporary file is removed and the old
file is left as it was.

Temporary names start with a dot (so folder scans, which skip hidden entries, never pick them
up) and end with the target's own suffix (so writers that choose the format from the name,
such as PIL's ``save`` or matplotlib's ``savefig``, write the right one).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "temporary_name"]


def temporary_name(path: str | os.PathLike) -> Path:
    """A fresh hidden sibling of ``path`` with the same suffix: ``.name.<random>.tmp.suffix``.

    Random rather than fixed, so two processes writing the same target never share a
    temporary file; the last rename wins with a complete file either way.
    """
    target = Path(path)
    return target.with_name(f".{target.stem}.{secrets.token_hex(6)}.tmp{target.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    For writers that take a file name (safetensors ``save_file``, ``torch.save``, PIL
    ``Image.save``, ``Figure.savefig``)::

        with atomic_path(out / "model.safetensors") as tmp:
            save_file(tensors, tmp)

    Parent folders are created. The temporary file is not created in advance, so the writer
    creates it with the usual permissions. Leaving the block without having written the file
    raises ``FileNotFoundError`` and leaves the target untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "xb") as handle:
        handle.write(data)
    return target


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8, newlines as given); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))
