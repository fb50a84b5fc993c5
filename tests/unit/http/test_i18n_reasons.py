"""Every reason and state a page can show has its code and its message in both catalogues,
found from the code itself: each `reason("code", ...)` call in the package, each sentence
literal handed to a reason-carrying call (a skip, a failed job, a delivery's error), every
word pynetdicom uses for an association rejection, every output's noun and every state. A
sentence without a code would be shown on a Ukrainian page as "a reason without a
translation"."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pynetdicom.pdu_primitives import A_ASSOCIATE

import dicomnode
from dicomnode.http.i18n import MESSAGES, translator
from dicomnode.imaging.reasons import REASONS, TERMS, parse_reason, reason
from dicomnode.objects.outputs import OUTPUTS
from dicomnode.store.tables import DeliveryState, JobState
from dicomnode.store.worklist import StudyState

PACKAGE = Path(dicomnode.__file__).parent
#: Calls whose arguments are reasons a page may show: a skip or failure of an image, a job's
#: end, a refused output, a delivery's error, an analysis entry's reason.
CARRIERS = {
    "NotClassifiable", "NotClassified", "SourceRejected", "AssociationFailed", "SendOutcome",
    "_finish", "_failed", "finish", "leave_out_of_report", "delivery_failed", "_Entry",
    "AnalysisError", "ArchiveRejected",
}  # fmt: skip
#: Packages whose reasons go to the audit trail and logs only (refused C-STOREs, Orthanc pulls,
#: retention), never to a page.
_NOT_ON_PAGES = ("ingest/", "pacs/", "retention/")
#: Variables that hold such a reason before it is handed on.
NAMED = {"reason", "error", "why", "unreachable", "refused", "skipped", "unreadable"}
_SAMPLE = "17"


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(PACKAGE)), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _sentence(node: ast.expr) -> str | None:
    """A string literal, or an f-string with each value replaced by a sample, when it reads
    as a sentence (has a space); else None (an identifier, a code, a variable)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr):
        text = "".join(
            str(v.value) if isinstance(v, ast.Constant) else _SAMPLE for v in node.values
        )
    else:
        return None
    return text if " " in text.strip() else None


def _emitted() -> tuple[set[str], list[tuple[str, int, str]]]:
    """(codes of `reason("code")` calls, (module, line, sentence) handed to carriers)."""
    codes: set[str] = set()
    sentences: list[tuple[str, int, str]] = []
    for module, tree in _modules():
        for node in ast.walk(tree):
            named = isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id in NAMED for target in node.targets
            )
            if named and not module.startswith(_NOT_ON_PAGES):
                assert isinstance(node, ast.Assign)
                if (text := _sentence(node.value)) is not None:
                    sentences.append((module, node.lineno, text))
            if not isinstance(node, ast.Call):
                continue
            name = _name(node.func)
            if name == "reason" and node.args and isinstance(node.args[0], ast.Constant):
                codes.add(str(node.args[0].value))
            if name in CARRIERS:
                arguments = [*node.args, *(k.value for k in node.keywords)]
                for argument in arguments:
                    text = _sentence(argument)
                    if text is not None:
                        sentences.append((module, node.lineno, text))
    return codes, sentences


def test_the_scan_finds_the_reasons_the_node_emits():
    codes, sentences = _emitted()
    # Delivery failures, failed jobs and output refusals: each through `reason(...)`.
    assert {"connection_refused", "rejected_because", "timed_out", "peer_status", "not_sent",
            "spooled_missing", "unexpected", "not_built", "destination_kind"} <= codes  # fmt: skip
    # Decoding reasons are still literals handed to NotClassifiable: found and read too.
    assert any(text.startswith("multi-frame image") for _, _, text in sentences)


def test_every_reason_the_code_can_emit_has_a_code_and_both_messages():
    codes, sentences = _emitted()
    assert codes - set(REASONS) == set(), "reason() called with an unknown code"
    uncoded = [(m, line, text) for m, line, text in sentences if parse_reason(text) is None]
    assert uncoded == [], "a sentence without a code (add it to imaging/reasons.py)"
    codes |= {parsed[0] for _, _, text in sentences if (parsed := parse_reason(text))}
    for code in sorted(codes | set(REASONS)):
        for language in ("en", "uk"):
            assert MESSAGES[language].get(f"reason.{code}"), (language, code)


@pytest.mark.parametrize("code", sorted(REASONS))
def test_no_reason_renders_as_the_untranslated_fallback(code):
    template = REASONS[code]
    params = {name: _SAMPLE for name in ("reason", "frames", "error", "host", "port")}
    english = template.format_map(_Defaults(params | {"reason": reason("no_pixel_data")}))
    uk = translator("uk").reason(english)
    assert uk != MESSAGES["uk"]["reason.unknown"] and "{" not in uk, (code, uk)
    assert uk != english, code


class _Defaults(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return _SAMPLE


def _rejections() -> set[str]:
    """Every word pynetdicom can put in an A-ASSOCIATE-RJ's description."""
    words = set()
    for result in (1, 2):
        for source in (1, 2, 3):
            for diagnostic in range(0, 11):
                primitive = A_ASSOCIATE()
                primitive.result, primitive.result_source = result, source
                try:
                    primitive.diagnostic = diagnostic
                except ValueError:  # not a value a peer can send
                    continue
                words |= {primitive.result_str, primitive.source_str, primitive.reason_str}
    return words


def test_every_term_a_reason_may_hold_is_translated():
    english = set(TERMS.values())
    assert _rejections() <= english
    assert {output.noun for output in OUTPUTS} <= english
    for code in TERMS:
        assert MESSAGES["en"][f"term.{code}"] == TERMS[code]
        assert MESSAGES["uk"][f"term.{code}"] != TERMS[code], code
    rejected = reason("rejected_because", result="Rejected Permanent", source="Service User",
                      why="Called AE title not recognised")  # fmt: skip
    assert translator("uk").reason(rejected) == (
        "вузол-отримувач відхилив асоціацію (відхилено остаточно, користувач служби: "
        "викликаний AE title не розпізнано)"
    )


def test_every_state_has_its_message_in_both_languages():
    for states in (JobState, StudyState, DeliveryState):
        for state in states:
            for language in ("en", "uk"):
                assert MESSAGES[language].get(f"state.{state.value}"), (language, state)
