"""Liveness and readiness probes (open, no API key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import ServiceDep
from service.api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> dict:
    """The process is alive and its event loop answers."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    responses={503: {"model": Readiness, "description": "loading, or draining before shutdown"}},
)
async def readyz(service: ServiceDep) -> JSONResponse:
    """200 when the model is loaded and warmed and the server is not draining; 503 otherwise."""
    body = {"ready": service.ready, "model_loaded": service.warmed, "draining": service.draining}
    return JSONResponse(body, status_code=200 if service.ready else 503)
