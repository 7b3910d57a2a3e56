"""The HTTP API (FastAPI): studies, worklist, review, notifications, referrals, models, decision
support (JSON and CDS Hooks), FHIR R4, health and metrics; access control; and the server-rendered
pages /review (radiologists) and /clinic (primary-care doctors).
"""
