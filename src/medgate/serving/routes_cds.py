"""Decision support for primary-care doctors: ``/api/v1/cds/*`` and HL7 CDS Hooks."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["decision support"])
