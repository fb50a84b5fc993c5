"""The generated sections of the documents in docs/ (written by docs/tools/gen_*.py).

A section stands between `<!-- BEGIN GENERATED name -->` and `<!-- END GENERATED name -->`.
The tests read it with their own pattern rather than the tools' code, so a tool that wrote
the markers wrongly would be caught.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def generated_section(text: str, name: str) -> str:
    """The body of the section `name` in a document's text; fails the test if it is missing."""
    match = re.search(
        rf"<!-- BEGIN GENERATED {re.escape(name)} -->\n(.*?)"
        rf"<!-- END GENERATED {re.escape(name)} -->",
        text,
        re.DOTALL,
    )
    assert match, f"the document has no generated '{name}' section"
    return match.group(1)


def check_generated(tool: str) -> subprocess.CompletedProcess[str]:
    """Run docs/tools/`tool` --check (exit 1 and a message when its document is stale)."""
    return subprocess.run(
        [sys.executable, str(REPO / "docs" / "tools" / tool), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
