"""Getting results where they belong: the regional PACS (C-STORE from the outbox), each site's own
PACS, its HIS (HL7 v2.5.1 ORU^R01 over MLLP) and its FHIR server; which site a study belongs to;
referrals as FHIR and referral notifications.
"""
