"""Routing rules: modality, body part, SOP class, description pattern, slice counts."""

from __future__ import annotations

import pytest

from medgate.core.config import RouteRule, load_settings
from medgate.pipeline.routing import Router

DX = "1.2.840.10008.5.1.4.1.1.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def rows(
    series: str, modality: str, body: str, count: int, sop_class: str = DX, description: str = ""
) -> list[dict[str, object]]:
    return [
        {
            "sop_instance_uid": f"{series}.{i}",
            "series_instance_uid": series,
            "modality": modality,
            "body_part": body,
            "sop_class_uid": sop_class,
            "series_description": description,
        }
        for i in range(count)
    ]


def test_default_rules_route_chest_radiograph_and_chest_ct() -> None:
    router = Router(load_settings(None).routing.rules)
    cxr = router.route(rows("1.1", "DX", "CHEST", 1))
    assert cxr.bundles == {"cxr_classifier": ["1.1.0"], "cxr_lung_heart_seg": ["1.1.0"]}
    assert cxr.rules == ["chest-radiograph"]
    ct = router.route(rows("2.1", "CT", "chest", 40, CT))
    assert list(ct.bundles) == ["ct_nodule_seg"] and len(ct.bundles["ct_nodule_seg"]) == 40


def test_no_match_says_what_was_seen() -> None:
    router = Router(load_settings(None).routing.rules)
    decision = router.route(rows("3.1", "MR", "HEAD", 20))
    assert not decision.matched
    assert "MR/HEAD (20 instances)" in (decision.reason or "")
    few_slices = router.route(rows("4.1", "CT", "CHEST", 3, CT))
    assert not few_slices.matched


def test_only_matching_series_are_passed_and_missing_bundles_explained() -> None:
    rules = [
        RouteRule(
            name="cxr",
            bundles=["a"],
            modalities=["DX"],
            sop_class_uids=[DX],
            series_description_pattern="^PA",
        ),
    ]
    study = rows("5.1", "DX", "CHEST", 1, description="PA view") + rows(
        "5.2", "DX", "CHEST", 1, description="LAT view"
    )
    assert Router(rules).route(study).bundles == {"a": ["5.1.0"]}
    decision = Router(rules, available=["other"]).route(study)
    assert not decision.matched and "not installed" in (decision.reason or "")


def test_bad_pattern_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="series_description_pattern"):
        Router([RouteRule(name="bad", bundles=["a"], series_description_pattern="(")])
