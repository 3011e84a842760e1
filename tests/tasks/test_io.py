from __future__ import annotations

import os

import pytest

from tasks.io import atomic_write


def test_atomic_write_text_bytes_and_parents(tmp_path) -> None:
    target = tmp_path / "a" / "b" / "x.json"
    atomic_write(target, "héllo")
    assert target.read_text(encoding="utf-8") == "héllo"
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(target.parent)) == ["x.json"]  # no temp file left behind


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path) -> None:
    target = tmp_path / "x.txt"
    atomic_write(target, "old")
    with pytest.raises(TypeError):
        atomic_write(target, 3)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["x.txt"]
