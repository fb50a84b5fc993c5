"""Rewrite, or check, the generated sections of a document: the part the gen_*.py tools share.

A generated section stands between `<!-- BEGIN GENERATED name -->` and
`<!-- END GENERATED name -->` on lines of their own; everything outside the markers is written
by hand and kept as it is.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path


def replace_sections(text: str, sections: dict[str, str], *, where: str) -> str:
    """`text` (the contents of `where`) with the body between each named section's markers
    replaced."""
    for name, body in sections.items():
        pattern = re.compile(
            rf"(<!-- BEGIN GENERATED {re.escape(name)} -->\n)(?:.*?\n)?(<!-- END GENERATED "
            rf"{re.escape(name)} -->)",
            re.DOTALL,
        )
        match = pattern.search(text)
        if match is None:
            raise SystemExit(f"markers for {name} not found in {where}")
        replacement = match.group(1) + body + "\n" + match.group(2)
        text = text[: match.start()] + replacement + text[match.end() :]
    return text


def main(
    argv: list[str] | None,
    *,
    doc: Path,
    sections: Callable[[], dict[str, str]],
    description: str,
    script: str,
) -> int:
    """The command line of a gen_*.py tool: rewrite `doc`, or with --check exit 1 if stale."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="exit 1 if the document is stale")
    args = parser.parse_args(argv)
    old = doc.read_text("utf-8")
    new = replace_sections(old, sections(), where=str(doc))
    if args.check:
        if new != old:
            repo = Path(__file__).resolve().parents[2]
            print(f"{doc.relative_to(repo)} is stale: run {Path(script).name}", file=sys.stderr)
            return 1
        return 0
    doc.write_text(new, "utf-8")
    return 0
