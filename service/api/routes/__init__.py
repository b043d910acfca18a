"""One router per concern: health, metrics, models, segment (REST), stream (WebSocket)."""
