"""Generate the SCP presentation-context tables of docs/conformance-statement.md from the code.

    PYTHONPATH=. .venv/bin/python docs/tools/gen_conformance_tables.py          # rewrite
    PYTHONPATH=. .venv/bin/python docs/tools/gen_conformance_tables.py --check  # exit 1 if stale

The tables come from the AE the node really builds (`dicomnode.scp.make_ae` with the settings of
configs/dicomnode.toml), so they list exactly what the SCP accepts. Each table is written
between `<!-- BEGIN GENERATED name -->` and `<!-- END GENERATED name -->` markers;
tests/unit/test_conformance_doc.py parses the UIDs back and compares them with the AE.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from pydicom.uid import UID

from dicomnode.config import load_settings
from dicomnode.scp import make_ae

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "conformance-statement.md"
CONFIG = REPO / "configs" / "dicomnode.toml"
Verification = "1.2.840.10008.1.1"  # Verification SOP Class


def scp_contexts() -> dict[str, list[str]]:
    """Abstract syntax → transfer syntaxes, as the node's SCP supports them."""
    ae = make_ae(load_settings(CONFIG, environ={}).node)
    return {
        str(c.abstract_syntax): [str(t) for t in c.transfer_syntax] for c in ae.supported_contexts
    }


def _decodable(uid: UID) -> str:
    """Whether the node can decode pixel data in this transfer syntax (to classify it)."""
    if not uid.is_encapsulated:
        return "yes"
    from pydicom.pixels.decoders.base import get_decoder

    try:
        return "yes" if get_decoder(uid).is_available else "no"
    except NotImplementedError:
        return "no"


def storage_sop_classes(contexts: dict[str, list[str]]) -> str:
    rows = ["| # | SOP Class | SOP Class UID |", "|---|---|---|"]
    storage = [uid for uid in contexts if uid != Verification]
    for number, uid in enumerate(storage, 1):
        rows.append(f"| {number} | {UID(uid).name} | `{uid}` |")
    return "\n".join(rows)


def storage_transfer_syntaxes(contexts: dict[str, list[str]]) -> str:
    syntaxes = [ts for uid, tss in contexts.items() if uid != Verification for ts in tss]
    unique = list(dict.fromkeys(syntaxes))
    rows = [
        "| Transfer Syntax | Transfer Syntax UID | Pixel data decoded for classification |",
        "|---|---|---|",
    ]
    for ts in unique:
        rows.append(f"| {UID(ts).name} | `{ts}` | {_decodable(UID(ts))} |")
    return "\n".join(rows)


def verification(contexts: dict[str, list[str]]) -> str:
    rows = ["| SOP Class | SOP Class UID | Transfer Syntaxes |", "|---|---|---|"]
    tss = ", ".join(f"{UID(t).name} `{t}`" for t in contexts[Verification])
    rows.append(f"| {UID(Verification).name} | `{Verification}` | {tss} |")
    return "\n".join(rows)


def blocks() -> dict[str, str]:
    contexts = scp_contexts()
    storage = {uid: tss for uid, tss in contexts.items() if uid != Verification}
    if len({tuple(t) for t in storage.values()}) != 1:
        raise SystemExit("storage SOP classes no longer share one transfer syntax list: "
                         "the document's layout (one table for all) must change")  # fmt: skip
    return {
        "scp-storage-sop-classes": storage_sop_classes(contexts),
        "scp-storage-transfer-syntaxes": storage_transfer_syntaxes(contexts),
        "scp-verification": verification(contexts),
    }


def replace_blocks(text: str, generated: dict[str, str]) -> str:
    for name, body in generated.items():
        pattern = re.compile(
            rf"(<!-- BEGIN GENERATED {re.escape(name)} -->\n)(?:.*?\n)?(<!-- END GENERATED "
            rf"{re.escape(name)} -->)",
            re.DOTALL,
        )
        match = pattern.search(text)
        if match is None:
            raise SystemExit(f"markers for {name} not found")
        replacement = match.group(1) + body + "\n" + match.group(2)
        text = text[: match.start()] + replacement + text[match.end() :]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the document is stale")
    args = parser.parse_args(argv)
    old = DOC.read_text("utf-8")
    new = replace_blocks(old, blocks())
    if args.check:
        if new != old:
            print(f"{DOC.relative_to(REPO)} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
