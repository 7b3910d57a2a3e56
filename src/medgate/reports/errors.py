"""The one exception the reports raise: the caller queues all result objects or none."""

from __future__ import annotations


class ReportError(ValueError):
    """A result object could not be built or failed validation; nothing should be sent."""
