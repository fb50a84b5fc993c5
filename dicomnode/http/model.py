"""`GET /api/model`: the model card of the loaded model, the engine that runs it and the
warnings about its validation evidence (`dicomnode.model.evidence`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status

from dicomnode.http.context import BEARER, Context
from dicomnode.model.card import ModelCard
from dicomnode.model.evidence import messages

router = APIRouter(dependencies=BEARER)


@router.get("/api/model")
def model(ctx: Context) -> dict[str, Any]:
    card = ctx.card()
    if card is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "model not loaded")
    data = model_json(card)
    if ctx.classifier is not None:  # which engine runs it: torch, onnxruntime, openvino-f32
        data["runtime"] = ctx.classifier.runtime  # "auto (openvino-bf16)" when measured
        # runtime = "auto": what was measured on this host (choice, ms/image, check figures)
        data["runtime_selection"] = ctx.classifier.selection
    return data


def model_json(card: ModelCard) -> dict[str, Any]:
    data = card.to_json()
    data["display_name"] = card.display_name
    data["untrained_demo"] = not card.trained
    #: Small validation sets, wide intervals, no metrics, the demo: with the numbers.
    data["warnings"] = messages(card)
    return data
