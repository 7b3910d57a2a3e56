"""Site scoping of the study API, and per-destination delivery state in the study JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from tests.support.delivery_studies import ADMIN, TOKEN_A, TOKEN_B, add_study
from tests.support.his_listener import MllpHis
from tests.support.http_server import served

from medgate.api.app import create_app
from medgate.core.config import ConfigError, Settings, load_settings
from medgate.delivery.site_delivery import SiteDelivery
from medgate.delivery.sites import site_for_aes, site_tokens, visible_to
from medgate.trust.audit import AuditLog


def _get(base: str, path: str, token: str) -> httpx.Response:
    return httpx.get(f"{base}/api/v1/{path}", headers={"Authorization": f"Bearer {token}"})


def test_site_token_sees_its_own_studies_only(
    sites_settings: Settings, engine: sa.engine.Engine
) -> None:
    uid_a = add_study(engine, sites_settings, calling_ae="CLINIC_A_CT")
    uid_b = add_study(engine, sites_settings, calling_ae="CLINIC_B_DX", patient_id="PID-B")
    uid_none = add_study(engine, sites_settings, calling_ae="UNKNOWN_AE")
    with served(create_app(sites_settings)) as base:
        listed = {s["study_instance_uid"] for s in _get(base, "studies", TOKEN_A).json()}
        assert listed == {uid_a}
        listed = {s["study_instance_uid"] for s in _get(base, "studies", ADMIN).json()}
        assert listed == {uid_a, uid_b, uid_none}
        denied = _get(base, f"studies/{uid_b}", TOKEN_A)
        assert denied.status_code == 403 and "site" in denied.json()["detail"]
        assert _get(base, f"studies/{uid_none}", TOKEN_B).status_code == 403
        assert _get(base, f"studies/{uid_a}", TOKEN_B).status_code == 403
        assert _get(base, f"studies/{uid_a}", TOKEN_A).json()["result"]["findings"]
        assert _get(base, f"studies/{uid_b}", TOKEN_B).status_code == 200
        worklist = {e["study_instance_uid"] for e in _get(base, "worklist", TOKEN_B).json()}
        assert uid_a not in worklist and uid_none not in worklist


def test_study_json_shows_his_delivery_state(
    sites_settings: Settings,
    engine: sa.engine.Engine,
    audit: AuditLog,
    his_a: MllpHis,
    his_b: MllpHis,
) -> None:
    uid_a = add_study(engine, sites_settings, calling_ae="CLINIC_A_CT")
    uid_b = add_study(engine, sites_settings, calling_ae="CLINIC_B_DX")
    his_b.state.mode = "AR"
    sender = SiteDelivery(sites_settings, engine, audit)
    with served(create_app(sites_settings)) as base:

        def delivery(uid: str) -> dict[str, dict[str, Any]]:
            response = _get(base, f"studies/{uid}", ADMIN)
            assert response.status_code == 200, response.text
            states: dict[str, dict[str, Any]] = response.json()["delivery"]
            return states

        assert "hl7:clinic-a" not in delivery(uid_a)  # nothing queued before the loop ran
        his_a.state.mode = "die"
        sender.run_once()
        state_a = delivery(uid_a)
        assert set(state_a) == {"pacs", "hl7:clinic-a"}
        assert state_a["hl7:clinic-a"]["state"] == "pending"
        assert state_a["hl7:clinic-a"]["confirmed"] == 0
        his_a.state.mode = "AA"
        for _ in range(40):
            sender.run_once()
            if delivery(uid_b)["hl7:clinic-b"]["state"] == "dead-letter":
                break
        final_a = delivery(uid_a)["hl7:clinic-a"]
        assert final_a["state"] == "delivered" and final_a["confirmed"] == 1
        assert final_a["confirmed_at"]
        assert delivery(uid_b)["hl7:clinic-b"] == {
            "state": "dead-letter",
            "objects": 1,
            "confirmed": 0,
            "confirmed_at": None,
        }


def test_site_rules(sites_settings: Settings) -> None:
    site = site_for_aes(sites_settings, ["CLINIC_A_CT "])  # AE titles arrive space-padded
    assert site is not None and site.name == "clinic-a"
    assert site_for_aes(sites_settings, ["OTHER"]) is None
    assert site_for_aes(sites_settings, ["clinic_a_ct"]) is None
    assert visible_to(None, None) and visible_to(None, site)
    assert visible_to("clinic-a", site) and not visible_to("clinic-b", site)
    assert not visible_to("clinic-a", None)
    scopes, owners = site_tokens(sites_settings)
    assert owners == {TOKEN_A: "clinic-a", TOKEN_B: "clinic-b"}
    assert scopes[TOKEN_A] == ["results", "fhir"]


def test_sites_are_read_from_toml_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "medgate.toml"
    config.write_text(
        """
[[sites]]
name = "clinic-a"
calling_aes = ["CLINIC_A_CT"]
hl7 = { host = "10.0.0.5", port = 2575 }
tokens = { "tok-a" = ["results", "fhir"] }

[[sites]]
name = "clinic-b"
calling_aes = ["CLINIC_B_DX"]

[delivery.hl7]
max_attempts = 3
""",
        encoding="utf-8",
    )
    settings = load_settings(config)
    assert [s.name for s in settings.sites] == ["clinic-a", "clinic-b"]
    assert settings.sites[0].hl7 is not None and settings.sites[0].hl7.port == 2575
    assert settings.sites[1].hl7 is None and settings.delivery.hl7.max_attempts == 3
    config.write_text(
        '[[sites]]\nname = "x"\ntokens = { "t" = ["fhir"] }\n'
        '[[sites]]\nname = "y"\ntokens = { "t" = ["fhir"] }\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="token is listed under two"):
        load_settings(config)
    config.write_text('[[sites]]\nname = "x"\n[[sites]]\nname = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="same name"):
        load_settings(config)
    config.write_text(
        '[api]\ntokens = { "t" = ["admin"] }\n[[sites]]\nname = "x"\ntokens = { "t" = ["fhir"] }\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="also listed in api"):
        load_settings(config)
