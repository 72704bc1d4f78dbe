"""The surface the HTTP API and the MCP server share (SPEC §6): who is calling
(:mod:`.callers`), the operations as ``(status, body)`` (:mod:`.operations`) and the JSON
shapes they answer with (:mod:`.shapes`). Transport-level, so not in ``services/``: the
services know nothing of statuses or callers' headers; these modules translate."""
