"""The one JSON writer: stable bytes, whole files only, immutable files never replaced."""

from __future__ import annotations

import json
import os
import stat

import pytest

from workbench.errors import WorkbenchError
from workbench.jsonio import dumps, write_json


def test_the_layout_is_sorted_indented_and_ends_with_a_newline(tmp_path):
    path = tmp_path / "new" / "folder" / "a.json"
    write_json(path, {"b": 1, "a": [1.5, None]})
    assert path.read_text() == '{\n "a": [\n  1.5,\n  null\n ],\n "b": 1\n}\n' == dumps(
        {"a": [1.5, None], "b": 1})
    write_json(path, {"c": 2})  # replaced in one step
    assert json.loads(path.read_text()) == {"c": 2}
    assert os.listdir(path.parent) == ["a.json"]  # no temporary file left


def test_an_exclusive_file_is_written_once(tmp_path):
    path = tmp_path / "record.json"
    write_json(path, {"a": 1}, exclusive=True)
    with pytest.raises(WorkbenchError, match="already exists; records are immutable"):
        write_json(path, {"a": 2}, exclusive=True)
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["record.json"]


def test_what_is_not_json_is_refused_before_the_disk_is_touched(tmp_path):
    path = tmp_path / "result.json"
    write_json(path, {"ok": True})
    for bad in ({"x": float("nan")}, {"x": float("inf")}, {"x": object()}):
        with pytest.raises((ValueError, TypeError)):
            write_json(path, bad)
    assert json.loads(path.read_text()) == {"ok": True}
    assert os.listdir(tmp_path) == ["result.json"]


def test_a_private_file_has_its_mode_from_the_start(tmp_path):
    path = tmp_path / "state.json"
    write_json(path, {"dsn": "x"}, mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_link_planted_at_the_temporary_name_is_neither_followed_nor_moved(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    path = tmp_path / "result.json"
    (tmp_path / f".result.json.{os.getpid()}.tmp").symlink_to(victim)  # a guessable name
    write_json(path, {"a": 1})
    assert victim.read_text() == "keep me"
    assert not path.is_symlink() and json.loads(path.read_text()) == {"a": 1}


def test_a_temporary_name_already_taken_is_never_opened(tmp_path, monkeypatch):
    from workbench import jsonio

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    planted = tmp_path / ".result.json.taken.tmp"
    planted.symlink_to(victim)
    names = iter(["taken", "free"])
    monkeypatch.setattr(jsonio.secrets, "token_hex", lambda n: next(names))
    write_json(tmp_path / "result.json", {"a": 1})
    assert victim.read_text() == "keep me" and planted.is_symlink()
    assert json.loads((tmp_path / "result.json").read_text()) == {"a": 1}


def test_replacing_writes_through_its_descriptor_whole_or_not_at_all(tmp_path):
    """For writers that open by name (pyarrow): the new content reaches the path only when
    the block ends, and a failed block leaves the old file and no temporary behind."""
    from pathlib import Path

    from workbench.jsonio import replacing

    path = tmp_path / "requests.parquet"
    path.write_text("old")
    with replacing(path) as name:
        assert name.startswith("/proc/self/fd/")
        Path(name).write_text("new")
        assert path.read_text() == "old"
    assert path.read_text() == "new" and sorted(tmp_path.iterdir()) == [path]
    with pytest.raises(RuntimeError), replacing(path) as name:
        Path(name).write_text("half")
        raise RuntimeError("mid-write")
    assert path.read_text() == "new" and sorted(tmp_path.iterdir()) == [path]
