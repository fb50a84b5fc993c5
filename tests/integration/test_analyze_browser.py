"""The Analyze and About-the-model pages in Debian's headless chromium on a real node.

A PNG made from a real radiograph (pydicom-data RG3 through `preprocess.to_grayscale`) is
chosen in the file picker, previewed, uploaded; the result shows probability bars and the
heatmap overlay; switching to Ukrainian keeps the result (its id is in the URL). Screenshots
go to test-artifacts/.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread

from dicomnode.imaging import preprocess
from tests.integration.test_ukrainian_pages import english_words
from tests.integration.test_worklist_browser import (  # noqa: F401 (fixture)
    ARTIFACTS,
    browser,
    csp_violations,
)
from tests.support.data import RG3_UNCR, testdata
from tests.support.nodecfg import write_node_config
from tests.support.peers import wait_until

TOKEN = "analyze-browser-token"
OUTCOMES_UK = {"підозра на перелом", "невизначено", "перелом не виявлено"}
#: The page's visible text without the parts marked as another language (the "English" link).
VISIBLE_TEXT = """
var text = document.body.innerText;
document.querySelectorAll("[lang]:not([lang=uk])").forEach(function (e) {
  if (e !== document.documentElement) { text = text.split(e.innerText).join(" "); }
});
return text;
"""


def _loaded(driver, element) -> bool:
    return bool(driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", element))  # fmt: skip


@pytest.mark.browser
def test_analyze_page_in_chromium(tmp_path, node_factory, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    image = preprocess.to_grayscale(dcmread(testdata(RG3_UNCR)))
    png = tmp_path / "radiograph.png"
    Image.fromarray(np.round(image * 255).astype(np.uint8), "L").save(png)
    config = write_node_config(tmp_path / "node", api={"token": TOKEN})
    node = node_factory(config).wait_ready()

    driver = browser
    driver.get(node.api_url + "/analyze")
    driver.find_element(By.ID, "token").send_keys(TOKEN)  # the page needs the token
    driver.find_element(By.ID, "sign-in").click()
    wait_until(lambda: driver.find_elements(By.ID, "dropzone"), timeout=30,
               what="the Analyze page after signing in")  # fmt: skip
    assert driver.current_url.endswith("/analyze")
    assert "UNTRAINED DEMO" in driver.find_element(By.ID, "untrained-banner").text
    assert "not a diagnosis" in driver.find_element(By.ID, "notice").text
    assert driver.find_element(By.ID, "analyze-button").get_attribute("disabled")

    driver.find_element(By.ID, "file").send_keys(str(png))
    preview = driver.find_element(By.ID, "preview-image")
    wait_until(lambda: _loaded(driver, preview), timeout=30, what="the preview")
    assert "radiograph.png" in driver.find_element(By.ID, "file-name").text
    driver.find_element(By.ID, "analyze-button").click()

    result = driver.find_element(By.ID, "result")
    wait_until(result.is_displayed, timeout=180, what="the result")
    assert not driver.find_element(By.ID, "upload-section").is_displayed()
    overlay = driver.find_element(By.ID, "overlay-image")
    wait_until(lambda: _loaded(driver, overlay), timeout=30, what="the heatmap overlay")
    assert "/api/analyses/" in overlay.get_attribute("src")
    outcome = result.get_attribute("data-outcome")
    assert outcome in ("positive", "doubt", "negative")
    fracture = driver.find_element(By.ID, "value-fracture").text
    normal = driver.find_element(By.ID, "value-normal").text
    p, q = (float(v.replace("%", "").strip()) for v in (fracture, normal))
    assert p + q == pytest.approx(100.0, abs=0.11)
    bar = driver.find_element(By.ID, "bar-fracture")
    track = bar.find_element(By.XPATH, "..")
    assert bar.size["width"] == pytest.approx(track.size["width"] * p / 100, abs=2)
    assert "UNTRAINED DEMO" in driver.find_element(By.ID, "result-model").text
    assert "id=" in driver.current_url
    ARTIFACTS.mkdir(exist_ok=True)
    driver.set_window_size(1400, 2200)
    english = ARTIFACTS / "analyze-en.png"
    assert driver.save_screenshot(str(english)) and english.stat().st_size > 10_000

    driver.find_element(By.ID, "lang-uk").click()
    wait_until(lambda: driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "uk",
               timeout=30, what="the page in Ukrainian")  # fmt: skip
    result = driver.find_element(By.ID, "result")
    wait_until(result.is_displayed, timeout=60, what="the result again, in Ukrainian")
    overlay = driver.find_element(By.ID, "overlay-image")
    wait_until(lambda: _loaded(driver, overlay), timeout=30, what="the overlay again")
    assert "не діагноз" in driver.find_element(By.ID, "notice").text
    assert "НЕНАВЧЕНА" in driver.find_element(By.ID, "untrained-banner").text
    assert driver.find_element(By.ID, "result-badge").text in OUTCOMES_UK
    assert driver.find_element(By.ID, "nav-analyze").text == "Аналіз"
    assert float(driver.find_element(By.ID, "value-fracture").text.replace("%", "")) == p
    shot = ARTIFACTS / "analyze-uk.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    driver.find_element(By.ID, "new-analysis").click()
    wait_until(driver.find_element(By.ID, "upload-section").is_displayed, timeout=10,
               what="a new analysis")  # fmt: skip
    assert "id=" not in driver.current_url and not result.is_displayed()

    # A zipped study (nested folders, a text file among the DICOM) on the same page.
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("EXPORT/PAT/STUDY/SER1/IM1", testdata(RG3_UNCR).read_bytes())
        zf.writestr("EXPORT/README.TXT", b"exported\n")
    driver.find_element(By.ID, "file").send_keys(str(archive))
    wait_until(driver.find_element(By.ID, "preview-none").is_displayed, timeout=10,
               what="no preview for a ZIP")  # fmt: skip
    driver.find_element(By.ID, "analyze-button").click()
    wait_until(result.is_displayed, timeout=180, what="the study result")
    tables = driver.find_elements(By.CSS_SELECTOR, "#study-results table")
    assert len(tables) == 2
    images = tables[1].find_elements(By.TAG_NAME, "tr")[1:]
    assert len(images) == 2
    assert {tr.find_elements(By.TAG_NAME, "td")[1].text for tr in images} == {
        "класифіковано", "пропущено"}  # fmt: skip
    links = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#downloads a")]
    assert "Звіт (XLSX)" in links and "Структурований звіт (DICOM)" in links
    # Everything the script rendered is Ukrainian (the skip reason of README.TXT too).
    assert "не файл DICOM" in tables[1].text
    visible = driver.execute_script(VISIBLE_TEXT)
    data_values = ("Non-ossifying fibroma of distal tibia", "EXTREMITY", "EXPORT/PAT/STUDY/",
                   "EXPORT/")  # fmt: skip
    for data in data_values:
        visible = visible.replace(data, " ")  # the study's own values and file names
    assert english_words(visible) == set(), visible
    study_shot = ARTIFACTS / "analyze-study-uk.png"
    assert driver.save_screenshot(str(study_shot)) and study_shot.stat().st_size > 10_000
    driver.find_element(By.ID, "new-analysis").click()

    driver.find_element(By.ID, "nav-about").click()
    wait_until(lambda: driver.find_elements(By.ID, "model-card"), timeout=30,
               what="the About page")  # fmt: skip
    assert "НЕНАВЧЕНА ДЕМО-модель" in driver.find_element(By.ID, "about-untrained").text
    assert "demo-" in driver.find_element(By.ID, "model-card").text
    about = ARTIFACTS / "about-model-uk.png"
    assert driver.save_screenshot(str(about)) and about.stat().st_size > 10_000
    # Previews (blob:), uploads, overlays, the study result: nothing refused by the CSP.
    assert csp_violations(driver) == []
