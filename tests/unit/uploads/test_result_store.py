"""`result.json`, the last write of an analysis, is durable and atomic: written through
`durable.atomic_write` (fsynced file, rename, fsynced directory), so a crash or a failure while
it is serialised never leaves half a result in the upload's folder."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicomnode.uploads.store import RESULT_FILE, UploadStore


def _result(images: int) -> dict[str, Any]:
    return {
        "type": "study",
        "images": [
            {"entry": f"a/{i}.dcm", "state": "classified", "text": "знімок"} for i in range(images)
        ],
        "downloads": ["report.xlsx"],
    }


def test_the_result_is_complete_and_fsynced(tmp_path: Path, monkeypatch) -> None:
    store = UploadStore(tmp_path / "uploads")
    upload_id, directory = store.create()
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    result = _result(5000)  # several hundred kB: many chunks of the encoder
    store.save_result(directory, result)
    assert len(synced) >= 2  # the file, then the directory holding the rename
    assert store.load_result(upload_id) == result
    assert json.loads((directory / RESULT_FILE).read_bytes()) == result
    assert sorted(p.name for p in directory.iterdir()) == [RESULT_FILE]


def test_a_failure_while_serialising_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    store = UploadStore(tmp_path / "uploads")
    upload_id, directory = store.create()
    real_iterencode = json.JSONEncoder.iterencode

    def broken(self: json.JSONEncoder, o: Any, _one_shot: bool = False) -> Iterator[str]:
        for n, chunk in enumerate(real_iterencode(self, o, _one_shot)):
            if n == 200:  # part of the document is already written
                raise RuntimeError("serialiser failed")
            yield chunk

    monkeypatch.setattr(json.JSONEncoder, "iterencode", broken)
    with pytest.raises(RuntimeError):
        store.save_result(directory, _result(100))
    assert list(directory.iterdir()) == []  # no result.json, no temporary file
    assert store.directory(upload_id) is None  # an upload without a result is not listed

    monkeypatch.setattr(json.JSONEncoder, "iterencode", real_iterencode)
    store.save_result(directory, _result(1))
    monkeypatch.setattr(json.JSONEncoder, "iterencode", broken)
    with pytest.raises(RuntimeError):
        store.save_result(directory, _result(100))
    assert store.load_result(upload_id) == _result(1)  # the previous result, whole
    assert sorted(p.name for p in directory.iterdir()) == [RESULT_FILE]
