"""The review console (SPEC §13): server-rendered pages under ``/ui``.

An adapter beside the HTTP API, the MCP server and the CLI: mounted on the API's app by
``create_app`` (so ``workmanager serve`` serves it), it signs people in with an API token
(:mod:`workmanager.ui.sessions`), reads through :mod:`~workmanager.reads.overview`,
:mod:`~workmanager.reads.listing` and :mod:`~workmanager.reads.item_listing`,
and acts only through :class:`~workmanager.surface.operations.Operations` — no rule lives in
the pages. Templates and the one small script are package data: no CDN, no build step.
"""

from __future__ import annotations

from .app import mount
from .pages import PREFIX

__all__ = ["PREFIX", "mount"]
