"""HTTP and WebSocket API of the service."""
