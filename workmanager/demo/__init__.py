"""The demo: an example order type and the end-to-end run of ``workmanager demo``."""
