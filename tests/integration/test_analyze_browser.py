"""The Analyze and About-the-model pages in Debian's headless chromium on a real node.

A PNG made from a real radiograph (pydicom-data RG3 through `preprocess.to_grayscale`) is
chosen in the page's one file picker, previewed, uploaded; the result shows probability bars
and the heatmap overlay; switching to Ukrainian keeps the result (its id is in the URL). Then,
in Ukrainian: the DICOM itself (previewed by the node, its study date formatted), a ZIP of two
patients' studies (one result each) and a CT (refused, with the reason). Screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import base64
import zipfile

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread

from dicomnode.http.analyze_dates import format_date
from dicomnode.http.i18n import translator
from dicomnode.imaging import preprocess
from tests.integration.test_ukrainian_pages import english_words
from tests.integration.test_worklist_browser import (  # noqa: F401 (fixture)
    browser,
    csp_violations,
)
from tests.support.data import RG3_UNCR, copy_with_new_uids, ct_small, new_uid, testdata
from tests.support.nodecfg import write_node_config
from tests.support.peers import wait_until
from tests.support.screens import save_screenshot

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
    # One picker: one file input (pictures, DICOM and ZIP alike), drawn as the drop zone only,
    # not as a second native "Choose file" button.
    [picker] = driver.find_elements(By.CSS_SELECTOR, "input[type=file]")
    assert picker.get_attribute("multiple") is None and ".zip" in picker.get_attribute("accept")
    assert picker.size["width"] <= 1 and picker.size["height"] <= 1
    zone = driver.find_element(By.ID, "dropzone")
    assert zone.tag_name == "label" and zone.get_attribute("for") == "file"
    assert zone.size["width"] > 200

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
    p, q = (float(v.replace("%", "").strip()) for v in (fracture, normal))  # English: 52.0 %
    assert p + q == pytest.approx(100.0, abs=0.11)
    bar = driver.find_element(By.ID, "bar-fracture")
    track = bar.find_element(By.XPATH, "..")
    assert bar.size["width"] == pytest.approx(track.size["width"] * p / 100, abs=2)
    assert "UNTRAINED DEMO" in driver.find_element(By.ID, "result-model").text
    assert "id=" in driver.current_url
    save_screenshot(driver, "analyze-en")

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
    ukrainian = driver.find_element(By.ID, "value-fracture").text  # "52,0 %": decimal comma
    assert "," in ukrainian and float(ukrainian.replace("%", "").replace(",", ".")) == p
    save_screenshot(driver, "analyze-uk")

    driver.find_element(By.ID, "new-analysis").click()
    wait_until(driver.find_element(By.ID, "upload-section").is_displayed, timeout=10,
               what="a new analysis")  # fmt: skip
    assert "id=" not in driver.current_url and not result.is_displayed()

    _dicom_previewed_and_dated(driver, testdata(RG3_UNCR))
    _two_patients_two_results(driver, tmp_path)
    _a_ct_is_refused_with_its_reason(driver)
    _a_dropped_file_is_chosen_like_a_picked_one(driver, png)

    driver.find_element(By.ID, "nav-about").click()
    wait_until(lambda: driver.find_elements(By.ID, "model-card"), timeout=30,
               what="the About page")  # fmt: skip
    assert "НЕНАВЧЕНА ДЕМО-модель" in driver.find_element(By.ID, "about-untrained").text
    assert "demo-" in driver.find_element(By.ID, "model-card").text
    save_screenshot(driver, "about-model-uk-demo")
    # Previews (blob:), uploads, overlays, the study result: nothing refused by the CSP.
    assert csp_violations(driver) == []


def _choose(driver, path) -> None:
    from selenium.webdriver.common.by import By

    if driver.find_element(By.ID, "result").is_displayed():
        driver.find_element(By.ID, "new-analysis").click()
    wait_until(driver.find_element(By.ID, "upload-section").is_displayed, timeout=10,
               what="the upload form")  # fmt: skip
    driver.find_element(By.ID, "file").send_keys(str(path))


def _dicom_previewed_and_dated(driver, path) -> None:
    """The main input: a DICOM file is previewed (rendered by the node, as it will see it)
    before it is analysed, and its result gives the study date as a date of the page's
    language."""
    from selenium.webdriver.common.by import By

    _choose(driver, path)
    preview = driver.find_element(By.ID, "preview-image")
    wait_until(lambda: _loaded(driver, preview), timeout=30, what="the DICOM preview")
    assert preview.get_attribute("src").startswith("blob:")
    assert driver.find_element(By.ID, "preview").get_attribute("data-kind") == "dicom"
    assert not driver.find_element(By.ID, "preview-none").is_displayed()
    assert driver.execute_script("return arguments[0].naturalWidth", preview) == 512
    driver.find_element(By.ID, "analyze-button").click()
    result = driver.find_element(By.ID, "result")
    wait_until(result.is_displayed, timeout=180, what="the DICOM result")
    overlay = driver.find_element(By.ID, "overlay-image")
    wait_until(lambda: _loaded(driver, overlay), timeout=30, what="the DICOM's heatmap (its SC)")
    date = driver.find_element(By.ID, "result-study-date")
    assert date.text == format_date("20040826", "uk") == "26 серпня 2004\u202fр."
    links = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#downloads a")]
    assert "Структурований звіт (DICOM)" in links and "Вторинний знімок (DICOM)" in links
    save_screenshot(driver, "analyze-uk-dicom")


def _two_patients_two_results(driver, tmp_path) -> None:
    """A ZIP holding two patients' studies (nested folders, a text file among them) gives
    one result per study, each with its own outcome, date and report."""
    from selenium.webdriver.common.by import By

    other = copy_with_new_uids(testdata(RG3_UNCR), tmp_path / "other.dcm",
                               study_uid=new_uid("browser", "study-b"), PatientID="OTHER",
                               StudyDate="20240315", StudyDescription="Wrist")  # fmt: skip
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("EXPORT/PAT/STUDY/SER1/IM1", testdata(RG3_UNCR).read_bytes())
        zf.writestr("EXPORT/PAT2/STUDY/SER1/IM1", other.read_bytes())
        zf.writestr("EXPORT/README.TXT", b"exported\n")
    _choose(driver, archive)
    status = driver.find_element(By.ID, "preview-status")
    wait_until(status.is_displayed, timeout=10, what="the note on a ZIP")
    assert "кожне дослідження" in status.text
    driver.find_element(By.ID, "analyze-button").click()
    result = driver.find_element(By.ID, "result")
    wait_until(result.is_displayed, timeout=180, what="the study results")
    assert result.get_attribute("data-outcome") == "studies"
    assert not driver.find_element(By.ID, "single-result").is_displayed()  # no one verdict
    cards = driver.find_elements(By.CSS_SELECTOR, "#study-results .study-card")
    assert len(cards) == 2
    titles = [c.find_element(By.TAG_NAME, "h4").text for c in cards]
    assert titles[0].startswith("Дослідження 1 з 2 · 26 серпня 2004\u202fр.")
    assert titles[1] == "Дослідження 2 з 2 · 15 березня 2024\u202fр. · Wrist"
    for card in cards:
        assert card.get_attribute("data-outcome") in ("positive", "doubt", "negative")
        assert card.find_element(By.CSS_SELECTOR, ".badge").text in OUTCOMES_UK
        thumb = card.find_element(By.CSS_SELECTOR, ".thumbs img")
        wait_until(lambda thumb=thumb: _loaded(driver, thumb), timeout=30, what="a study's image")
        assert "класифіковано 1 з 1" in card.find_element(By.CSS_SELECTOR, ".study-facts").text
    rows = driver.find_elements(By.CSS_SELECTOR, "#study-results table tr")[1:]
    assert {tr.find_elements(By.TAG_NAME, "td")[1].text for tr in rows} == {
        "класифіковано", "пропущено"}  # fmt: skip
    links = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#downloads a")]
    assert "Звіт (XLSX)" in links
    assert sum(link.startswith("Структурований звіт (DICOM) · Дослідження") for link in links) == 2
    # Everything the script rendered is Ukrainian (the skip reason of README.TXT too).
    assert "не файл DICOM" in driver.find_element(By.ID, "study-results").text
    visible = driver.execute_script(VISIBLE_TEXT)
    data_values = ("Non-ossifying fibroma of distal tibia", "Wrist", "EXTREMITY",
                   "EXPORT/PAT/STUDY/", "EXPORT/PAT2/STUDY/", "EXPORT/")  # fmt: skip
    for data in data_values:
        visible = visible.replace(data, " ")  # the studies' own values and file names
    assert english_words(visible) == set(), visible
    save_screenshot(driver, "analyze-uk-two-studies")


def _a_ct_is_refused_with_its_reason(driver) -> None:
    """An out-of-scope upload is previewed, then refused with its reason: not a failure."""
    from selenium.webdriver.common.by import By

    _choose(driver, ct_small())
    preview = driver.find_element(By.ID, "preview-image")
    wait_until(lambda: _loaded(driver, preview), timeout=30, what="the CT's preview")
    driver.find_element(By.ID, "analyze-button").click()
    error = driver.find_element(By.ID, "analyze-error")
    wait_until(error.is_displayed, timeout=120, what="the refusal")
    assert error.get_attribute("data-kind") == "refused"
    assert driver.find_element(By.ID, "analyze-error-title").text == "Не проаналізовано:"
    assert translator("uk").reason("modality CT is not a radiograph") in error.text
    assert english_words(error.text.replace("CT", " ")) == set(), error.text
    assert "не вдався" not in error.text  # not "Analysis failed"
    assert driver.find_element(By.ID, "upload-section").is_displayed()  # choose another
    assert not driver.find_element(By.ID, "result").is_displayed()
    save_screenshot(driver, "analyze-uk-refused")


def _a_dropped_file_is_chosen_like_a_picked_one(driver, png) -> None:
    """Drag and drop onto the zone is the same picker: a dropped picture is named, previewed
    and ready to analyse. (WebDriver cannot drag from the desktop: the drop event is
    dispatched with a real DataTransfer holding the file.)"""
    from selenium.webdriver.common.by import By

    small = Image.open(png).reduce(8)
    small.save(png.with_name("dropped.png"))
    data = base64.b64encode(png.with_name("dropped.png").read_bytes()).decode()
    driver.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
        const zone = document.getElementById("dropzone");
        for (const type of ["dragenter", "dragover", "drop"]) {
          zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true,
                                                  cancelable: true}));
        }
    """, data)  # fmt: skip
    assert "dropped.png" in driver.find_element(By.ID, "file-name").text
    preview = driver.find_element(By.ID, "preview-image")
    wait_until(lambda: _loaded(driver, preview), timeout=30, what="the dropped file's preview")
    assert not driver.find_element(By.ID, "analyze-button").get_attribute("disabled")
    assert "dragging" not in driver.find_element(By.ID, "dropzone").get_attribute("class")
