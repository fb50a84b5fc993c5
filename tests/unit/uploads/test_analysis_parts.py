"""The pure parts of HTTP analysis: content sniffing, entry-name safety, upload retention
selection, and the XLSX report's refusal to store formulas."""

from __future__ import annotations

import zipfile
from datetime import datetime

import pytest
from openpyxl import load_workbook

from dicomnode.model.card import ModelCard
from dicomnode.uploads.analysis import UploadKind, prediction_fields, sniff
from dicomnode.uploads.store import expired_uploads
from dicomnode.uploads.studyzip import ArchiveRejected, ZipLimits, is_unsafe_name, read_members
from dicomnode.uploads.xlsx import write_report
from tests.support.data import RG3_UNCR, testdata


def test_sniff_by_content_not_name():
    assert sniff(testdata(RG3_UNCR).read_bytes()) == UploadKind.DICOM
    assert sniff(b"\x89PNG\r\n\x1a\n....") == UploadKind.PNG
    assert sniff(b"\xff\xd8\xff\xe0....") == UploadKind.JPEG
    assert sniff(b"BM....") == UploadKind.BMP
    assert sniff(b"II*\x00....") == sniff(b"MM\x00*....") == UploadKind.TIFF
    assert sniff(b"PK\x03\x04....") == UploadKind.ZIP
    assert sniff(b"GIF89a....") is None and sniff(b"hello") is None and sniff(b"") is None


@pytest.mark.parametrize(
    ("name", "unsafe"),
    [("a/b/c.dcm", False), ("IM0001", False), ("a/..b/c", False), ("../x", True),
     ("a/../../x", True), ("/etc/passwd", True), ("\\\\server\\x", True), ("C:/x", True),
     ("c:\\x", True), ("a\\..\\..\\x", True), ("a\x00b", True)],
)  # fmt: skip
def test_unsafe_entry_names(name, unsafe):
    assert is_unsafe_name(name) is unsafe


def test_archive_limits_are_checked_before_anything_is_written(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("small", b"ok")
        zf.writestr("bomb", bytes(8 * 1024 * 1024))
    out = tmp_path / "out"
    out.mkdir()
    limits = ZipLimits(max_entries=10, max_total_bytes=1 << 30, max_entry_bytes=1 << 30,
                       max_ratio=100)  # fmt: skip
    with pytest.raises(ArchiveRejected) as caught:
        read_members(archive, out, limits)
    assert (caught.value.code, caught.value.status) == ("zip_ratio", 413)
    assert list(out.iterdir()) == []
    relaxed = ZipLimits(max_entries=10, max_total_bytes=1 << 30, max_entry_bytes=1 << 30,
                        max_ratio=1e9)  # fmt: skip
    members, skipped = read_members(archive, out, relaxed)
    assert [m.name for m in members] == ["small", "bomb"] and skipped == []
    assert [m.path.name for m in members] == ["000000.bin", "000001.bin"]  # generated names
    assert members[1].size == 8 * 1024 * 1024


def test_expired_uploads_selection():
    entries = [("a", 1000.0), ("b", 1000.0 + 3600), ("c", 1000.0 + 7200)]
    assert expired_uploads(entries, now=1000.0 + 7200, retention_hours=1) == ["a", "b"]
    assert expired_uploads(entries, now=1000.0 + 7199, retention_hours=2) == []
    assert expired_uploads(entries, now=1e12, retention_hours=0) == []  # 0 keeps everything


def test_confidence_is_the_more_likely_class():
    card = ModelCard(name="m", version="1", architecture="a", input_size=32, mean=(0, 0, 0),
                     std=(1, 1, 1), threshold_low=0.3, threshold_high=0.7)  # fmt: skip
    assert prediction_fields(0.9, card)["confidence"] == pytest.approx(0.9)
    low = prediction_fields(0.1, card)
    assert low["confidence"] == pytest.approx(0.9) and low["label"] == "no_fracture"
    assert prediction_fields(0.5, card)["outcome"] == "doubt"
    assert prediction_fields(0.7, card)["label"] == "fracture"


def test_report_never_stores_formulas(tmp_path):
    hostile = '=HYPERLINK("http://evil.invalid","x")'
    result = {
        "studies": [{"study_instance_uid": "1.2.3", "outcome": "negative",
                     "summary": {"study_description": hostile, "modalities": ["CR"]}}],
        "images": [{"entry": "+cmd|' /C calc'!A0", "state": "skipped", "reason": "@SUM(1)",
                    "metadata": {"manufacturer": "-2+3"}}],
        "model": {"display_name": "m", "version": "1", "architecture": "a",
                  "untrained_demo": True},
        "thresholds": {"low": 0.3, "high": 0.7}, "processing_ms": 1.0,
    }  # fmt: skip
    path = tmp_path / "r.xlsx"
    assert write_report(path, result) == ["Studies", "Images", "Model"]
    workbook = load_workbook(path)
    cells = [c for ws in workbook for row in ws.iter_rows() for c in row if c.value]
    texts = {c.value for c in cells}
    assert {hostile, "+cmd|' /C calc'!A0", "@SUM(1)", "-2+3"} <= texts
    assert all(c.data_type != "f" for c in cells)
    with zipfile.ZipFile(path) as zf:
        sheets = "".join(zf.read(n).decode() for n in zf.namelist() if n.endswith(".xml"))
    assert "<f>" not in sheets


def test_report_names_the_model_on_every_row_and_gives_real_dates(tmp_path):
    result = {
        "studies": [{"study_instance_uid": "1.2.3", "outcome": "doubt",
                     "summary": {"study_date": "20040826"}}],
        "images": [{"entry": "a.dcm", "state": "classified"}],
        "model": {"name": "demo", "display_name": "demo (UNTRAINED DEMO)", "version": "d-1",
                  "architecture": "a", "untrained_demo": True},
        "thresholds": {"low": 0.3, "high": 0.7}, "processing_ms": 1.0,
    }  # fmt: skip
    path = tmp_path / "r.xlsx"
    write_report(path, result)
    workbook = load_workbook(path)
    for sheet in ("Studies", "Images"):
        header, row = (list(r) for r in workbook[sheet].iter_rows(values_only=True))
        values = dict(zip(header, row, strict=True))
        assert (values["AI model"], values["AI model version"], values["UNTRAINED DEMO"]) == (
            "demo", "d-1", "yes",
        )  # fmt: skip
    header, row = (list(r) for r in workbook["Studies"].iter_rows(values_only=True))
    # a real date cell (the reader's spreadsheet shows it in the reader's format), not text
    assert dict(zip(header, row, strict=True))["Study date"] == datetime(2004, 8, 26)
