"""Deterministic UIDs and privacy-safe identifiers.

Output UIDs are derived from (UID root, inputs, model version, output kind) so that a retried
or repeated job produces the same objects. UIDs are never written to logs raw: `hash_uid` gives
a salted, truncated digest that still lets an administrator correlate log lines.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path

#: Sub-root under pydicom's organisation root; sites should configure their own registered root.
DEFAULT_UID_ROOT = "1.2.826.0.1.3680043.8.498.4711."

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(value: str) -> bool:
    """True for a syntactically valid DICOM UID (PS3.5 9.1), at most 64 characters."""
    return 0 < len(value) <= 64 and bool(_UID_RE.match(value))


def derive_uid(root: str, *parts: str) -> str:
    """A UID under `root` that depends only on `parts`.

    The suffix is the decimal value of a SHA-256 prefix, cut so the whole UID fits 64 chars.
    """
    if not root.endswith("."):
        root += "."
    if not is_valid_uid(root[:-1]):
        raise ValueError("UID root is not a valid UID prefix")
    room = 64 - len(root)
    if room < 20:
        raise ValueError("UID root too long: leaves fewer than 20 digits for the suffix")
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    number = int.from_bytes(digest[:16], "big")
    suffix = str(number)[:room].lstrip("0") or "1"
    return root + suffix


def hash_uid(uid: str, salt: str) -> str:
    """Salted short hash of a UID (or any identifier) for logs, audit and file names."""
    return hashlib.sha256(f"{salt}\x1f{uid}".encode()).hexdigest()[:16]


def node_salt(data_dir: Path, configured: str) -> str:
    """The salt for hashed identifiers in logs: configured, or made once and kept on disk."""
    if configured:
        return configured
    path = data_dir / "log-salt"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(16))
        path.chmod(0o600)
    return path.read_text().strip()
