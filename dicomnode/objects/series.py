"""The series the node writes its objects into: number and description, defined once.

A module of constants only (no highdicom), so that retention can recognise the node's own
series without loading the builders. Each output of `objects.outputs` names its series here.
"""

from __future__ import annotations

SR_SERIES_NUMBER = 9901
SR_SERIES_DESCRIPTION = "AI fracture triage report"
SC_SERIES_NUMBER = 9902
SC_SERIES_DESCRIPTION = "AI fracture triage overlay"
GSPS_SERIES_NUMBER = 9903
GSPS_SERIES_DESCRIPTION = "AI fracture triage findings"

#: Series descriptions of every object the node writes (retention deletes only these in PACS).
OWN_SERIES_DESCRIPTIONS = frozenset(
    {SR_SERIES_DESCRIPTION, SC_SERIES_DESCRIPTION, GSPS_SERIES_DESCRIPTION}
)
