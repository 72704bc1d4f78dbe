"""The surface the HTTP API and the MCP server share (SPEC §6): who is calling
(:mod:`.callers`), the operations as ``(status, body)`` (:mod:`.operations`), the JSON
shapes they answer with (:mod:`.shapes`) and the ASGI layer in front of both
(:mod:`.middleware`: body limits, request ids, the last-resort 500). Transport-level, so
not in ``services/``: the services know nothing of statuses or callers' headers; these
modules translate."""
