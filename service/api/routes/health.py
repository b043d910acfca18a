"""Liveness and readiness probes (open, no API key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import ServiceDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    """The process is alive and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(service: ServiceDep) -> JSONResponse:
    """200 when the model is loaded and warmed and the server is not draining; 503 otherwise."""
    body = {"ready": service.ready, "model_loaded": service.warmed, "draining": service.draining}
    return JSONResponse(body, status_code=200 if service.ready else 503)
