"""The gettext catalogues of the pages (`dicomnode/locale/<lang>/LC_MESSAGES/dicomnode.po`),
read with Babel, and the one step that moves keyed messages from Python dicts into them.

Message ids are keys (`"outcome.doubt"`), as the templates' `t("key")` always were; the English
catalogue holds the English text. The .po files are read at start-up (no compile step, so a
fresh clone serves the same text as an installed wheel).

Moving keys from a Python dict (a branch that still adds to the old `MESSAGES` dicts, or a new
module of messages) is mechanical and can be re-run:

    git show OTHER:dicomnode/http/i18n.py > /tmp/old.py
    python -m dicomnode.http.i18n_catalogue merge /tmp/old.py [--update]

Every top-level `NAME = {...}` / `NAME: ... = {...}` whose name ends in `MESSAGES` and maps a
language code to `{key: text}` is read (`ast.literal_eval`, nothing is imported or run). Keys the
catalogues lack are added; `--update` also replaces the text of keys they have.

The English `reason.<code>` and `term.<code>` messages are `dicomnode.imaging.reasons.REASONS`
and `TERMS`;
`python -m dicomnode.http.i18n_catalogue reasons` copies them after a reason is added or
changed (its Ukrainian message is then written by hand; a test checks both exist).
"""

from __future__ import annotations

import argparse
import ast
import io
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po
from babel.support import Translations

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "dicomnode"
#: A fixed header date, so re-writing a catalogue changes only the messages.
_EPOCH = datetime(2026, 12, 1, tzinfo=UTC)


def po_path(language: str, *, locale_dir: Path = LOCALE_DIR) -> Path:
    return locale_dir / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def languages(*, locale_dir: Path = LOCALE_DIR) -> list[str]:
    """The languages with a catalogue, English first."""
    found = sorted(
        p.name for p in locale_dir.iterdir() if po_path(p.name, locale_dir=locale_dir).is_file()
    )
    return sorted(found, key=lambda code: code != "en")


def read_catalogue(language: str, *, locale_dir: Path = LOCALE_DIR) -> Catalog:
    with po_path(language, locale_dir=locale_dir).open("rb") as f:
        return read_po(f, locale=language, domain=DOMAIN)


def messages(catalogue: Catalog) -> dict[str, str]:
    """{key: text} of the translated, non-fuzzy messages, in catalogue order."""
    return {
        str(m.id): str(m.string)
        for m in catalogue
        if m.id and isinstance(m.id, str) and isinstance(m.string, str) and m.string
        and not m.fuzzy
    }  # fmt: skip


def translations(catalogue: Catalog) -> Translations:
    """The catalogue as gettext `Translations` (compiled in memory, never on disk)."""
    buffer = io.BytesIO()
    write_mo(buffer, catalogue)
    buffer.seek(0)
    return Translations(fp=buffer, domain=DOMAIN)


def write_catalogue(catalogue: Catalog, language: str, *, locale_dir: Path = LOCALE_DIR) -> None:
    path = po_path(language, locale_dir=locale_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    write_po(buffer, catalogue, width=100, omit_header=False, include_lineno=False)
    path.write_bytes(buffer.getvalue())


def new_catalogue(language: str) -> Catalog:
    header = f"# dicomnode page messages ({language}); ids are keys."
    return Catalog(locale=language, domain=DOMAIN, project="dicomnode", creation_date=_EPOCH,
                   revision_date=_EPOCH, fuzzy=False, header_comment=header)  # fmt: skip


def merge(
    found: Mapping[str, Mapping[str, str]], *, update: bool = False, locale_dir: Path = LOCALE_DIR
) -> dict[str, list[str]]:
    """Add `found[language][key]` to the catalogues (a new language gets a new catalogue);
    `update`: also replace existing texts. Returns the keys written per language."""
    written: dict[str, list[str]] = {}
    for language, entries in found.items():
        path = po_path(language, locale_dir=locale_dir)
        catalogue = (
            read_catalogue(language, locale_dir=locale_dir)
            if path.is_file()
            else new_catalogue(language)
        )
        changed = [
            key
            for key, text in entries.items()
            if key not in catalogue or (update and catalogue[key].string != text)
        ]
        for key in changed:
            existing = catalogue.get(key)
            if existing is None:
                catalogue.add(key, entries[key])
            else:  # Catalog.add would keep the old text
                existing.string = entries[key]
        if changed:
            write_catalogue(catalogue, language, locale_dir=locale_dir)
        written[language] = changed
    return written


def dicts_in_source(source: str) -> dict[str, dict[str, str]]:
    """The `*MESSAGES` dict literals of a Python module's source, merged per language."""
    found: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        targets: Iterable[ast.expr]
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if not any(name.endswith("MESSAGES") for name in names) or not isinstance(value, ast.Dict):
            continue
        literal = ast.literal_eval(value)
        for language, entries in literal.items():
            if isinstance(entries, dict):
                found.setdefault(str(language), {}).update(
                    {str(k): str(v) for k, v in entries.items()}
                )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dicomnode.http.i18n_catalogue")
    sub = parser.add_subparsers(dest="command", required=True)
    merge_cmd = sub.add_parser("merge", help="move *MESSAGES dict literals into the .po files")
    merge_cmd.add_argument("files", nargs="+", type=Path)
    merge_cmd.add_argument("--update", action="store_true", help="replace existing texts too")
    merge_cmd.add_argument("--locale-dir", type=Path, default=LOCALE_DIR)
    reasons_cmd = sub.add_parser("reasons", help="copy imaging.reasons into the English .po")
    reasons_cmd.add_argument("--locale-dir", type=Path, default=LOCALE_DIR)
    args = parser.parse_args(argv)
    if args.command == "reasons":
        from dicomnode.imaging.reasons import REASONS, TERMS

        english = {f"reason.{code}": text for code, text in REASONS.items()}
        english |= {f"term.{code}": text for code, text in TERMS.items()}
        written = merge({"en": english}, update=True, locale_dir=args.locale_dir)
        print(f"en: {len(written['en'])} reason(s) written")
        return 0
    found: dict[str, dict[str, str]] = {}
    for file in args.files:
        for language, entries in dicts_in_source(file.read_text(encoding="utf-8")).items():
            found.setdefault(language, {}).update(entries)
    for language, keys in merge(found, update=args.update, locale_dir=args.locale_dir).items():
        print(
            f"{language}: {len(keys)} message(s) written" + (f": {', '.join(keys)}" if keys else "")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
