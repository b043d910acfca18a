"""Prometheus exposition of this app's own registry (open, or a key with ``read-metrics`` when
``protect_metrics`` is on)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import ServiceDep, authorize
from service.api.schemas import error_responses

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        **error_responses("unauthorized", "forbidden"),
    },
)
async def metrics(request: Request, service: ServiceDep) -> Response:
    if service.settings.protect_metrics:
        authorize(request, service, "read-metrics", allow_query_token=False)
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
