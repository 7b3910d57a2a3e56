"""Traced decision support: each CDS Hooks answer kept with its inputs' provenance and versions,
CDS Hooks 2.0 override reasons and SMART link on cards, feedback stored against the card,
an accepted referral suggestion creating the referral (once), and ``medgate audit trace
--patient`` showing it all; the patient ID never reaches the plain logs or the audit trail."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.configs import settings_to_toml
from tests.support.patient_view_hook import PATIENT_ID, hook
from tests.support.referral_site import HOSPITAL, SITE_A, SITE_B
from typer.testing import CliRunner

from medgate.api import cds_fhir
from medgate.cli.main import app as cli
from medgate.clinical.followup import INFO as FOLLOW_UP
from medgate.core.config import Settings
from medgate.core.logs import phi_hash

HOOK_URL = "/cds-services/medgate-primary-care"
#: The hook's readings were measured on 5 December 2026 (``patient_view_hook``): it is answered
#: that morning, so they are recent enough to use (``cds_fhir.MAX_AGE``).
ANSWERED_AT = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def answered_that_morning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cds_fhir, "utc_now", lambda: ANSWERED_AT)


def referral_card(cards: list[dict[str, Any]]) -> dict[str, Any]:
    return next(c for c in cards if c.get("suggestions"))


def test_answer_is_traced_and_an_accepted_referral_suggestion_creates_the_referral(
    client: TestClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = client.post(
        HOOK_URL, json=hook("d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"), headers=SITE_A
    )
    assert answer.status_code == 200, answer.text
    cards = answer.json()["cards"]
    card = referral_card(cards)
    assert card["indicator"] == "critical"
    for c in cards:  # CDS Hooks 2.0: override reasons and the SMART link on every card
        assert {r["code"] for r in c["overrideReasons"]} >= {"patient-declined", "not-applicable"}
        assert c["links"][0]["type"] == "smart"
        assert c["links"][0]["url"].endswith("/clinic/launch")
    suggestion = card["suggestions"][0]
    other = next(c for c in cards if c is not card)

    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": suggestion["uuid"]}],
                "outcomeTimestamp": "2026-12-05T08:40:00Z",
            },
            {
                "card": other["uuid"],
                "outcome": "overridden",
                "overrideReason": {
                    "reason": other["overrideReasons"][0],
                    "userComment": "discussed with the patient",
                },
                "outcomeTimestamp": "2026-12-05T08:41:00Z",
            },
        ]
    }
    url = HOOK_URL + "/feedback"
    assert client.post(url, json=feedback, headers=SITE_A).status_code == 200
    assert client.post(url, json=feedback, headers=SITE_A).status_code == 200  # a retry
    referrals = client.get("/api/v1/referrals", params={"patient": PATIENT_ID}, headers=SITE_A)
    made = referrals.json()
    assert len(made) == 1, made  # accepted twice, created once
    assert made[0]["origin"] == "cds" and made[0]["site"] == "clinic-a"
    assert made[0]["urgency"] == "urgent" and made[0]["status"] == "requested"
    assert made[0]["reason"] == card["summary"]
    task = client.get(f"/fhir/Task/{made[0]['id']}", headers=HOSPITAL).json()
    assert task["status"] == "requested"

    # B's token may not give feedback on A's cards; a suggestion the card lacks is refused.
    assert client.post(url, json=feedback, headers=SITE_B).status_code == 403
    bad = {
        "feedback": [
            {"card": card["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": "x"}]}
        ]
    }
    assert client.post(url, json=bad, headers=SITE_A).status_code == 404

    # The patient ID is in no log line and no audit entry; the trail names them by keyed hash.
    trail = settings.audit_path.read_text()
    # (httpx's lines are the test client's own requests, not the server's logs)
    server_lines = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]
    assert PATIENT_ID not in trail and not [m for m in server_lines if PATIENT_ID in m]
    key = phi_hash(PATIENT_ID, settings.audit.hash_key)
    entries = [json.loads(line) for line in trail.splitlines()]
    answers = [e for e in entries if e["event"] == "cds-answer"]
    assert [e["details"]["patient"] for e in answers] == [key]
    assert {e["details"]["outcome"] for e in entries if e["event"] == "cds-feedback"} == {
        "accepted",
        "overridden",
    }


def test_audit_trace_by_patient_shows_inputs_provenance_versions_and_cards(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    cards = client.post(HOOK_URL, json=hook("3f0e0a56-0001"), headers=SITE_A).json()["cards"]
    card = referral_card(cards)
    client.post(
        HOOK_URL + "/feedback",
        json={
            "feedback": [
                {
                    "card": card["uuid"],
                    "outcome": "accepted",
                    "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
                }
            ]
        },
        headers=SITE_A,
    )
    client.post(HOOK_URL, json=hook("3f0e0a56-0002"), headers=SITE_A)
    config = tmp_path / "medgate.toml"
    config.write_text(settings_to_toml(settings))
    result = CliRunner().invoke(
        cli,
        ["audit", "trace", "--patient", PATIENT_ID, "--config", str(config)],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("medgate-primary-care") == 2
    assert "3f0e0a56-0001" in out and "3f0e0a56-0002" in out
    # the latest blood pressure came from Observation bp-new, measured at 08:30 on 5 Dec
    assert "sbp_mmhg=186 ← Observation/bp-new @ 2026-12-05T08:30:00Z" in out
    assert "heart_rate=84 ← Observation/hr-1" in out and "Condition/htn-1" in out
    assert f"{FOLLOW_UP.name} {FOLLOW_UP.version} #{FOLLOW_UP.coefficients_sha256[:12]}" in out
    assert "medgate.clinical.assess" in out  # the referral rules' release
    assert "feedback: accepted → referral" in out
    assert "requested" in out  # the referral it created, with its history
    assert PATIENT_ID not in out  # the patient is shown by key
    missing = CliRunner().invoke(
        cli, ["audit", "trace", "--patient", "nobody", "--config", str(config)]
    )
    assert missing.exit_code == 1
    neither = CliRunner().invoke(cli, ["audit", "trace", "--config", str(config)])
    assert neither.exit_code == 2
