"""The primary-care doctor's pages in a real browser: Debian's chromium (headless, selenium and
chromedriver) on the API served by uvicorn on a loopback port.

The doctor of clinic A signs in with the site's token, finds the urgent patient first, opens
them (imaging result, scores over time, the referral that came back down with the hospital's
plan), switches to English, and is refused clinic B's patient. The referral is read back over
the same HTTP server with fhirclient (an R4 FHIR client library). Screenshots are kept in
tests/artifacts/clinic/ (docs/clinic.md shows copies from docs/images/).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from fhirclient.models.servicerequest import ServiceRequest
from fhirclient.models.task import Task
from fhirclient.server import FHIRServer
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from tests.support.browser import chromium, served_on_loopback
from tests.support.clinic_data import B_PATIENT, URGENT_PATIENT, ClinicData, populate

from medgate.core.config import Settings

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "clinic"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium(width=1280, height=900, lang="zh-CN") as driver:
        yield driver


@pytest.fixture
def served(client: TestClient, settings: Settings) -> Iterator[tuple[str, ClinicData]]:
    """The app, with clinic data, on a real loopback HTTP port (uvicorn in a thread)."""
    data = populate(client, settings)
    with served_on_loopback(client.app, "clinic") as url:
        yield url, data


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """A screenshot of the whole page (the window grown to the page's height)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(700, min(int(height) + 40, 4000)))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    assert path.stat().st_size > 10_000
    driver.set_window_size(1280, 900)
    return path


def test_clinic_doctor_follows_an_urgent_patient_in_chromium(
    served: tuple[str, ClinicData], browser: webdriver.Chrome
) -> None:
    base, data = served
    wait = WebDriverWait(browser, 20)

    browser.get(f"{base}/clinic")
    token = wait.until(ec.presence_of_element_located((By.ID, "token")))
    screenshot(browser, "clinic_login_zh.png")
    token.send_keys("site-a-token")
    browser.find_element(By.ID, "signin").click()
    table = wait.until(ec.presence_of_element_located((By.ID, "patients")))
    rows = table.find_elements(By.CSS_SELECTOR, "tr.patient-row")
    assert len(rows) == 3
    assert URGENT_PATIENT in rows[0].text and rows[0].get_attribute("data-priority") == "urgent"
    assert "已完成（已下转）" in rows[0].text
    assert B_PATIENT not in browser.page_source
    assert browser.find_element(By.ID, "who").text == "机构: clinic-a"
    screenshot(browser, "clinic_patients_zh.png")

    rows[0].find_element(By.CSS_SELECTOR, "a.open-patient").click()
    name = wait.until(ec.presence_of_element_located((By.ID, "patient-name")))
    assert "王芳" in name.text
    studies = browser.find_elements(By.CSS_SELECTOR, ".study")
    assert len(studies) == 1 and "结节 (91%) 9.5 mm" in studies[0].text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#scores tbody tr")) == 2
    referral = browser.find_element(By.CSS_SELECTOR, ".referral")
    assert referral.get_attribute("data-status") == "completed"
    assert "3个月、12个月复查胸部CT" in browser.find_element(By.ID, "plan").text
    screenshot(browser, "clinic_patient_zh.png")

    browser.find_element(By.ID, "lang-switch").click()
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h2"), "Imaging results"))
    assert "Hospital's follow-up plan" in browser.find_element(By.ID, "plan").text
    assert "Nodule (91%) 9.5 mm" in browser.find_element(By.CSS_SELECTOR, ".study").text
    screenshot(browser, "clinic_patient_en.png")
    browser.get(f"{base}/clinic?lang=en")
    wait.until(ec.presence_of_element_located((By.ID, "patients")))
    screenshot(browser, "clinic_patients_en.png")

    browser.get(f"{base}/clinic/patients/{data.b_key}")
    message = wait.until(ec.presence_of_element_located((By.ID, "message")))
    assert "不属于您的机构" in message.text and B_PATIENT not in browser.page_source
    screenshot(browser, "clinic_forbidden_zh.png")

    # The same referral, read by an R4 FHIR client over the same server.
    server = FHIRServer(None, base_uri=f"{base}/fhir/")
    server.session.headers["Authorization"] = "Bearer hospital-token"
    request = ServiceRequest.read(data.referral_id, server)
    task = Task.read(data.referral_id, server)
    assert (request.status, request.priority) == ("completed", "urgent")
    assert request.subject.identifier.value == URGENT_PATIENT
    assert task.status == "completed" and "12个月" in task.output[0].valueString
    assert task.focus.reference == f"ServiceRequest/{data.referral_id}"
