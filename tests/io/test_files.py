"""Atomic writes: a reader sees the old file or the whole new one, and failures leave no trace."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from ldmdetect.io.files import atomic_path, atomic_write_bytes, atomic_write_text, temporary_name


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_text_and_bytes_create_parents_and_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "notes.txt"
    assert atomic_write_text(target, "héllo\n") == target
    assert target.read_bytes() == "héllo\n".encode()
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _names(target.parent) == ["notes.txt"]


def test_failure_inside_block_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a fi")
        assert tmp.parent == tmp_path and tmp.name.startswith(".")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["model.safetensors"]


def test_interrupt_is_cleaned_up_too(tmp_path: Path) -> None:
    target = tmp_path / "log.json"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("{")
        raise KeyboardInterrupt
    assert _names(tmp_path) == []


def test_failed_rename_keeps_nothing(tmp_path: Path) -> None:
    # The target is a non-empty folder: the write succeeds, the rename fails.
    target = tmp_path / "report.md"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(OSError):
        atomic_write_text(target, "text")
    assert _names(tmp_path) == ["report.md"] and _names(target) == ["keep"]


def test_writer_that_writes_nothing_fails_loudly(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(FileNotFoundError), atomic_path(target):
        pass
    assert target.read_bytes() == b"old"


def test_temporary_name_keeps_suffix_for_format_inference(tmp_path: Path) -> None:
    for name in ("grid.png", "photo.jpg"):
        target = tmp_path / name
        tmp = temporary_name(target)
        assert tmp.parent == tmp_path and tmp.suffix == target.suffix
        assert tmp.name.startswith(".") and ".tmp" in tmp.name
        assert temporary_name(target) != tmp  # fresh per call: concurrent writers never share
        with atomic_path(target) as path:
            Image.new("RGB", (8, 8), "red").save(path)  # format chosen from the name
    with Image.open(tmp_path / "grid.png") as png, Image.open(tmp_path / "photo.jpg") as jpg:
        assert (png.format, jpg.format) == ("PNG", "JPEG")
    assert _names(tmp_path) == ["grid.png", "photo.jpg"]


def test_permissions_follow_umask_not_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = atomic_write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
