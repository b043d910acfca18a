"""What the server serves: ``GET /v1/models``."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ApiKey, ServiceDep
from service.api.schemas import ModelList, error_responses

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[ApiKey])


@router.get(
    "/models",
    response_model=ModelList,
    summary="The served model",
    responses=error_responses("unauthorized", "not_ready", "shutting_down"),
)
async def models(service: ServiceDep) -> dict:
    backend, _ = service.require_ready()
    s = service.settings
    return {"models": [{**backend.info(), "max_batch": s.max_batch, "budget_ms": s.budget_ms}]}
