"""Generate the SCP presentation-context tables of docs/conformance-statement.md from the code.

    PYTHONPATH=. .venv/bin/python docs/tools/gen_conformance_tables.py          # rewrite
    PYTHONPATH=. .venv/bin/python docs/tools/gen_conformance_tables.py --check  # exit 1 if stale

The tables come from the AE the node really builds (`dicomnode.ingest.scp.make_ae` with the settings of
configs/dicomnode.toml), so they list exactly what the SCP accepts. Each table is written
between `<!-- BEGIN GENERATED name -->` and `<!-- END GENERATED name -->` markers;
tests/unit/test_conformance_doc.py parses the UIDs back and compares them with the AE.
"""

from __future__ import annotations

import sys
from pathlib import Path

import generated_sections  # docs/tools, next to this script
from pydicom.uid import UID

from dicomnode.config import load_settings
from dicomnode.ingest.scp import make_ae

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
        retired = " (retired)" if UID(uid).is_retired else ""
        rows.append(f"| {number} | {UID(uid).name}{retired} | `{uid}` |")
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


def main(argv: list[str] | None = None) -> int:
    return generated_sections.main(
        argv,
        doc=DOC,
        sections=blocks,
        description=__doc__.splitlines()[0],
        script=__file__,
    )


if __name__ == "__main__":
    sys.exit(main())
