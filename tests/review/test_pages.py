"""The /review pages in-process: sign-in, worklist order and filters, study page, overlay PNGs,
both languages."""

from __future__ import annotations

import io
import re

from PIL import Image
from tests.support.review_gateway import RESULTS_TOKEN, REVIEW_TOKEN, Gateway

from medgate.api.pages.session import COOKIE


def _login(gateway: Gateway) -> None:
    answer = gateway.client.post(
        "/review/login",
        data={
            "token": REVIEW_TOKEN,
            "name": "Wang^Li",
            "reviewer_id": "rad-007",
            "next": "/review",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/review"
    assert COOKIE in answer.cookies


def test_pages_need_a_review_sign_in(gateway: Gateway) -> None:
    answer = gateway.client.get("/review", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/review/login")
    refused = gateway.client.post(
        "/review/login",
        data={"token": RESULTS_TOKEN, "name": "X", "reviewer_id": "x", "lang": "en"},
    )
    assert refused.status_code == 401 and "not valid for review" in refused.text
    tampered = gateway.client.get(
        "/review", cookies={COOKIE: "e30.deadbeef"}, follow_redirects=False
    )
    assert tampered.status_code == 303


def test_worklist_orders_by_priority_and_filters(gateway: Gateway) -> None:
    # a study no rule matches arrives first (not processed, no priority) ...
    other = gateway.process(51, Modality="CT", BodyPartExamined="HEAD")
    # ... then a pneumothorax radiograph (the tiny model calls it critical)
    critical = gateway.process(52)
    row = gateway.index.studies.get(critical)
    assert row is not None and row.priority == "critical"
    _login(gateway)
    page = gateway.client.get("/review?lang=en")
    assert page.status_code == 200
    order = re.findall(r'data-study="([0-9.]+)"', page.text)
    assert order == [critical, other]
    assert "pneumothorax" in page.text and "Critical" in page.text
    only_ct = gateway.client.get("/review?lang=en&modality=CT").text
    assert re.findall(r'data-study="([0-9.]+)"', only_ct) == [other]
    assert re.findall(
        r'data-study="([0-9.]+)"', gateway.client.get("/review?priority=critical").text
    ) == [critical]
    # reviewed filter follows the verdicts
    body = {
        "reviewer": {"name": "ignored", "id": "ignored"},
        "verdicts": [{"finding": "pneumothorax", "verdict": "confirmed"}],
    }
    stored = gateway.client.post(f"/api/v1/studies/{critical}/review", json=body)  # session cookie
    assert stored.status_code == 201, stored.text
    # the session's identity is recorded, not the body's
    assert stored.json()["review"]["reviewer"] == {"name": "Wang^Li", "id": "rad-007"}
    assert re.findall(
        r'data-study="([0-9.]+)"', gateway.client.get("/review?reviewed=yes").text
    ) == [critical]
    assert re.findall(
        r'data-study="([0-9.]+)"', gateway.client.get("/review?reviewed=no").text
    ) == [other]


def test_study_page_in_both_languages_with_overlay_png(gateway: Gateway) -> None:
    uid = gateway.process(53)
    _login(gateway)
    zh = gateway.client.get(f"/review/{uid}")  # default language from config: zh
    assert zh.status_code == 200
    assert "确认" in zh.text and "否定" in zh.text and "签署并发送复核报告" in zh.text
    en = gateway.client.get(f"/review/{uid}?lang=en").text
    for words in (
        "Confirm",
        "Reject",
        "Modify",
        "Probability",
        "Guidance for the referring doctor",
    ):
        assert words in en
    assert 'data-finding="pneumothorax"' in en and 'data-finding="cardiomegaly"' in en
    images = re.findall(r'src="(/review/[0-9.]+/images/[0-9.]+\.png)"', en)
    assert images
    png = gateway.client.get(images[0])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(png.content))
    assert picture.mode in ("L", "RGB") and min(picture.size) >= 64
    assert gateway.client.get(f"/review/{uid}/images/1.2.3.png").status_code == 404
    assert gateway.client.get("/review/1.2.3.4").status_code == 404
    css = gateway.client.get("/review/static/review.css")
    assert css.status_code == 200 and "--critical" in css.text
