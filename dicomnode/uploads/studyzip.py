"""Reading an uploaded ZIP study safely: limits first, nothing extracted by its own name.

A hostile archive can claim small sizes and expand to terabytes (a ZIP bomb), hold millions
of entries, or name entries `../../etc/cron.d/x` or `/abs/path`. So:

- the whole archive is refused (`ArchiveRejected`) before anything is written when it has too
  many entries, an unsafe entry name (absolute, drive letter, a `..` component, NUL), or when
  the sizes it declares already exceed the limits;
- each entry is then copied, in chunks, to `<private dir>/<sequence number>.bin` (the entry's
  name is kept only as a label), counting the bytes actually produced: an entry or the total
  going over its limit, or a compression ratio above the limit, refuses the archive there;
- the caller owns the private directory (a `TemporaryDirectory`) and removes it, whatever
  happens.

Status codes: limits → 413, a corrupt or unsafe archive → 422 (see `ArchiveRejected`).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dicomnode.config import ApiSettings

CHUNK = 1 << 20
#: Entries smaller than this are not held to the compression ratio (tiny files compress
#: arbitrarily well and are harmless).
RATIO_FLOOR_BYTES = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int
    max_total_bytes: int
    max_entry_bytes: int
    max_ratio: float

    @classmethod
    def from_settings(cls, api: ApiSettings) -> ZipLimits:
        """From `[api]`: max_zip_entries, max_zip_uncompressed_mb, max_upload_mb (one entry
        can be no larger than one uploaded file), max_compression_ratio."""
        mib = 1024 * 1024
        return cls(
            max_entries=api.max_zip_entries,
            max_total_bytes=int(api.max_zip_uncompressed_mb * mib),
            max_entry_bytes=int(api.max_upload_mb * mib),
            max_ratio=api.max_compression_ratio,
        )


class ArchiveRejected(Exception):
    """The archive is not processed at all. `code` names a message; `status` is the HTTP
    answer (413 for a limit, 422 for a corrupt or unsafe archive)."""

    def __init__(self, code: str, status: int, **params: object) -> None:
        super().__init__(code)
        self.code = code
        self.status = status
        self.params = params


@dataclass(frozen=True)
class Member:
    #: Position in the archive (0-based), for ordering.
    index: int
    #: The entry's name as the archive gives it: a label, never used as a path.
    name: str
    #: Where its bytes were copied (a generated name in the private directory).
    path: Path
    size: int


@dataclass(frozen=True)
class SkippedEntry:
    name: str
    reason: str


def is_unsafe_name(name: str) -> bool:
    """True for names that would escape a directory if someone extracted by name."""
    if "\x00" in name:
        return True
    normal = name.replace("\\", "/")
    if normal.startswith("/") or _DRIVE.match(normal):
        return True
    return ".." in PurePosixPath(normal).parts


def read_members(
    archive: Path, destination: Path, limits: ZipLimits
) -> tuple[list[Member], list[SkippedEntry]]:
    """Copy the archive's files into `destination` under generated names, within `limits`.

    Returns the copied members (archive order) and the entries left out with a reason
    (encrypted, unsupported compression). Raises ArchiveRejected; on that, files already
    copied stay in `destination` for the caller to remove with it.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveRejected("zip_corrupt", 422) from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise ArchiveRejected("zip_too_many_entries", 413, count=len(infos),
                                  limit=limits.max_entries)  # fmt: skip
        if any(is_unsafe_name(info.filename) for info in infos):
            raise ArchiveRejected("zip_unsafe_path", 422)
        files = [info for info in infos if not info.is_dir()]
        _check_declared(files, limits)
        members: list[Member] = []
        skipped: list[SkippedEntry] = []
        total = 0
        for index, info in enumerate(files):
            if info.flag_bits & 0x1:
                skipped.append(SkippedEntry(info.filename, "encrypted entry"))
                continue
            target = destination / f"{index:06d}.bin"
            try:
                size = _copy(zf, info, target, limits, already=total)
            except NotImplementedError:
                target.unlink(missing_ok=True)
                skipped.append(SkippedEntry(info.filename, "unsupported compression method"))
                continue
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
                raise ArchiveRejected("zip_corrupt", 422) from exc
            total += size
            members.append(Member(index, info.filename, target, size))
        return members, skipped


def _check_declared(files: list[zipfile.ZipInfo], limits: ZipLimits) -> None:
    """Refuse early on what the archive itself declares (it may lie low, never high)."""
    declared = sum(info.file_size for info in files)
    if declared > limits.max_total_bytes:
        raise ArchiveRejected("zip_too_large", 413, limit_mb=_mb(limits.max_total_bytes))
    for info in files:
        if info.file_size > limits.max_entry_bytes:
            raise ArchiveRejected("zip_entry_too_large", 413,
                                  limit_mb=_mb(limits.max_entry_bytes))  # fmt: skip
        if _ratio_exceeded(info.file_size, info.compress_size, limits):
            raise ArchiveRejected("zip_ratio", 413, limit=limits.max_ratio)


def _ratio_exceeded(size: int, compressed: int, limits: ZipLimits) -> bool:
    return size > RATIO_FLOOR_BYTES and size / max(compressed, 1) > limits.max_ratio


def _copy(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limits: ZipLimits, *, already: int
) -> int:
    """Stream one entry to `target`, counting real output against the limits."""
    size = 0
    with zf.open(info) as source, open(target, "xb") as out:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > limits.max_entry_bytes:
                raise ArchiveRejected("zip_entry_too_large", 413,
                                      limit_mb=_mb(limits.max_entry_bytes))  # fmt: skip
            if already + size > limits.max_total_bytes:
                raise ArchiveRejected("zip_too_large", 413, limit_mb=_mb(limits.max_total_bytes))
            if _ratio_exceeded(size, info.compress_size, limits):
                raise ArchiveRejected("zip_ratio", 413, limit=limits.max_ratio)
            out.write(chunk)
    return size


def _mb(value: int) -> str:
    return f"{value / (1024 * 1024):g}"
