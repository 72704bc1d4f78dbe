"""Metrics drivers (SPEC §4.8), chosen by alias with lazy imports."""

from .base import Metrics, MetricsDriver
from .factory import build_metrics

__all__ = ["Metrics", "MetricsDriver", "build_metrics"]
