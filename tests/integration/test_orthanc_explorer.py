"""The router plugin's Orthanc Explorer extension, rendered by headless Debian chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.data import copy_with_new_uids, new_uid, testdata
from tests.support.peers import wait_until

REPO = Path(__file__).resolve().parents[2]
ORTHANC_JSON = REPO / "orthanc" / "orthanc.json"

pytestmark = pytest.mark.browser


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("chromium and chromium-driver are needed: run `make test`", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


def test_study_page_shows_the_recorded_outcome(tmp_path, orthanc_factory, browser):
    from selenium.webdriver.common.by import By

    orthanc = orthanc_factory(config=ORTHANC_JSON)
    source = copy_with_new_uids(testdata("RG3_UNCR.dcm"), tmp_path / "cr.dcm",
                                study_uid=new_uid(tmp_path, "explorer"))  # fmt: skip
    instance = orthanc.upload(source)["ID"]
    study = orthanc.get(f"/instances/{instance}/study")["ID"]
    page = f"{orthanc.http_url}/app/explorer.html#study?uuid={study}"

    browser.get(page)  # nothing recorded yet: no AI box
    wait_until(lambda: browser.find_elements(By.ID, "study-info"), timeout=30,
               what="the study page")  # fmt: skip
    assert not browser.find_elements(By.CSS_SELECTOR, ".dicomnode-outcome")

    for name, value in {"AIOutcome": "positive", "AIProbability": "0.8712",
                        "AIModel": "dicomnode-demo (UNTRAINED DEMO)"}.items():  # fmt: skip
        orthanc.client.put(f"/studies/{study}/metadata/{name}", content=value).raise_for_status()
    browser.get("about:blank")
    browser.get(page)

    def shown() -> str | None:
        found = browser.find_elements(By.CSS_SELECTOR, "#dicomnode-ai .dicomnode-outcome")
        return found[0].text if found and found[0].text else None

    text = wait_until(shown, timeout=30, what="the AI outcome on the study page")
    assert text == "AI triage: fracture suspected 0.87 (UNTRAINED DEMO)"
