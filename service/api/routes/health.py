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
    responses={
        503: {
            "model": Readiness,
            "description": "loading, draining, no API keys, or the audit trail cannot be written",
        }
    },
)
async def readyz(service: ServiceDep) -> JSONResponse:
    """200 when the model is loaded and warmed, the server is not draining, its key file (if any)
    holds a key and its audit trail (if a file) can be written; 503 otherwise, ``problems`` says why."""
    problems = service.problems()
    service.publish_ready()
    body = {
        "ready": not problems,
        "model_loaded": service.warmed,
        "draining": service.draining,
        "problems": problems,
    }
    return JSONResponse(body, status_code=200 if not problems else 503)
