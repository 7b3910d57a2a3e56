"""The radiologist's loop in a real browser: Debian's chromium (headless, through selenium and
chromedriver) on the gateway's HTTP API served by uvicorn, verified SR delivered to a real Orthanc.

Orthanc sends (C-STORE) a study no rule matches, then a pneumothorax radiograph (the tiny model
calls it critical) to medgate's running DICOM receiver; the worker processes them; the
pneumothorax study is first on /review. The test opens it, confirms the pneumothorax (click),
rejects the cardiomegaly (keyboard shortcut), writes a report, sends; medgate's running outbox
sender delivers the verified SR to Orthanc, which holds it in the study: dciodvfy clean,
highdicom reads the verdicts and the predecessor is the AI SR. Screenshots of the pages are kept
in tests/artifacts/.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import highdicom as hd
import pytest
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from tests.support.browser import chromium, served_on_loopback
from tests.support.review_gateway import REVIEW_TOKEN, Gateway
from tests.support.serving import phantom_bytes, study_uid_of, wait_for

from medgate.core.ports import free_port
from medgate.dicom.orthanc import OrthancServer
from medgate.reports.validate import dciodvfy

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium(width=1600, height=1200, lang="en-US") as driver:
        yield driver


@pytest.fixture
def served(gateway: Gateway) -> Iterator[str]:
    """The gateway's FastAPI app on a real loopback HTTP port (uvicorn in a thread)."""
    with served_on_loopback(gateway.client.app, "review") as url:
        yield url


@pytest.fixture
def gateway(
    gateway_factory: Callable[..., Gateway], orthanc_factory: Callable[..., OrthancServer]
) -> Gateway:
    """medgate with its DICOM side and worker running; Orthanc knows it as a modality (to send
    studies to it) and is its PACS (to receive the results)."""
    port = free_port()
    orthanc = orthanc_factory(modalities={"MEDGATE": ("MEDGATE", "127.0.0.1", port)})
    made = gateway_factory(
        with_dicom=True,
        dicom={"host": "127.0.0.1", "port": port, "study_idle_seconds": 1.0},
        pacs={"ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port},
    )
    made.orthanc = orthanc  # type: ignore[attr-defined]
    return made


def _send_to_medgate(orthanc: OrthancServer, data: bytes) -> str:
    """Upload a study to Orthanc and have Orthanc C-STORE it to medgate; its StudyInstanceUID."""
    answer = orthanc.upload(data)
    orthanc.post(
        "/modalities/MEDGATE/store", json={"Resources": [answer["ID"]], "Synchronous": True}
    )
    return study_uid_of(data)


def _done(gateway: Gateway, uid: str) -> bool:
    row = gateway.index.studies.get(uid)
    return row is not None and str(row.status) in ("done", "not-processed", "failed")


def _screenshot(driver: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    return path


def test_radiologist_verifies_a_pneumothorax_in_chromium(
    gateway: Gateway, served: str, browser: webdriver.Chrome
) -> None:
    orthanc: OrthancServer = gateway.orthanc  # type: ignore[attr-defined]
    # a study no rule matches arrives first, then the pneumothorax radiograph; both by C-STORE
    other = _send_to_medgate(orthanc, phantom_bytes(61, Modality="CT", BodyPartExamined="HEAD"))
    wait_for(lambda: _done(gateway, other), 60, what="the first study to be handled")
    ptx = _send_to_medgate(orthanc, phantom_bytes(62))
    wait_for(lambda: _done(gateway, ptx), 60, what="the pneumothorax study's results")
    study = gateway.index.studies.get(ptx)
    assert study is not None and study.priority == "critical" and study.result is not None
    ai_sr = next(o["sop_instance_uid"] for o in study.result["result_objects"] if o["kind"] == "sr")
    wait = WebDriverWait(browser, 30)

    # sign in (the page asks first), then the worklist: the critical study leads
    browser.get(f"{served}/review?lang=en")
    wait.until(ec.presence_of_element_located((By.ID, "token"))).send_keys(REVIEW_TOKEN)
    browser.find_element(By.ID, "name").send_keys("Wang^Li")
    browser.find_element(By.ID, "reviewer_id").send_keys("rad-007")
    browser.find_element(By.ID, "login").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#worklist tr.row")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#worklist tr.row")
    assert [r.get_attribute("data-study") for r in rows] == [ptx, other]
    assert "critical" in rows[0].text.lower() and "pneumothorax" in rows[0].text
    worklist_png = _screenshot(browser, "review_worklist.png")

    # the study: confirm the pneumothorax by clicking, reject the cardiomegaly by its shortcut
    rows[0].find_element(By.CSS_SELECTOR, "a.open").click()
    form = wait.until(ec.presence_of_element_located((By.ID, "review-form")))
    wait.until(
        lambda d: d.execute_script(
            "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    ptx_card = form.find_element(By.CSS_SELECTOR, 'fieldset[data-finding="pneumothorax"]')
    ptx_card.find_element(By.CSS_SELECTOR, "label.choice.confirm").click()
    ptx_card.find_element(By.CSS_SELECTOR, "input.comment").send_keys("visible apical rim")
    heart = form.find_element(By.CSS_SELECTOR, 'fieldset[data-finding="cardiomegaly"]')
    heart.find_element(By.CSS_SELECTOR, "legend").click()
    ActionChains(browser).send_keys("r").perform()
    assert heart.find_element(By.CSS_SELECTOR, "input[value=rejected]").is_selected()
    browser.find_element(By.ID, "report_text").send_keys("Right apical pneumothorax. Heart normal.")
    browser.execute_script("window.scrollTo(0, 0)")
    study_png = _screenshot(browser, "review_study.png")
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-review-sent"))
    verified_uid = browser.find_element(By.TAG_NAME, "body").get_attribute("data-review-sent")
    assert "queued for the PACS" in browser.find_element(By.ID, "message").text
    _screenshot(browser, "review_study_sent.png")

    # medgate's outbox sender (running) delivers the verified SR to the PACS, into the study
    orthanc_id = wait_for(
        lambda: orthanc.find_instance(str(verified_uid)), 60, what="the verified SR in Orthanc"
    )
    assert isinstance(orthanc_id, str)
    data = orthanc.instance_file(orthanc_id)
    checked = dciodvfy(data)
    assert checked.errors == [] and checked.warnings == [], checked.output
    sr = hd.sr.srread(io.BytesIO(data))
    assert sr.StudyInstanceUID == ptx and sr.VerificationFlag == "VERIFIED"
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Wang^Li"
    predecessor = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ai_sr
    calls = {
        g.tracking_identifier: g.get_qualitative_evaluations()[0].value.meaning
        for g in sr.content.get_image_measurement_groups()  # type: ignore[attr-defined]
    }
    assert calls["tiny_cxr pneumothorax"] == "Present"  # AI said present, confirmed
    assert calls["tiny_cxr cardiomegaly"] == "Absent"  # AI said present, rejected
    texts = [i.TextValue for i in sr.ContentSequence[-1].ContentSequence if i.ValueType == "TEXT"]
    assert "Radiologist verdict: pneumothorax confirmed: visible apical rim" in texts
    assert "Right apical pneumothorax. Heart normal." in texts

    # the stats page counts the review (one study, two findings judged)
    browser.get(f"{served}/review/stats?lang=en")
    card = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".model-card")))
    assert card.find_element(By.CSS_SELECTOR, ".n-studies").text == "1"
    stats_png = _screenshot(browser, "review_stats.png")

    # the pictures for docs/review.md
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(worklist_png, DOCS_IMAGES / "review_worklist.png")
    shutil.copyfile(study_png, DOCS_IMAGES / "review_study.png")
    shutil.copyfile(stats_png, DOCS_IMAGES / "review_stats.png")
