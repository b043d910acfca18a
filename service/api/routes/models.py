"""What the server serves: ``GET /v1/models``."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ApiKey, ServiceDep

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[ApiKey])


@router.get("/models")
async def models(service: ServiceDep) -> dict:
    backend, _ = service.require_ready()
    s = service.settings
    return {"models": [{**backend.info(), "max_batch": s.max_batch, "budget_ms": s.budget_ms}]}
