"""The routers of the HTTP API, one per concern."""
