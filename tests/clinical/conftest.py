"""Fixtures of the clinical-rule tests: the app (for the HTTP checks) on temporary storage."""

from __future__ import annotations

from tests.cds.conftest import cds_settings, client

__all__ = ["cds_settings", "client"]
