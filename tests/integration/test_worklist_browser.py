"""The worklist page in Debian's headless chromium (Selenium + chromedriver) on a real node.

The node runs a model package built here from the tiny arch; its thresholds are placed
between the probabilities the package gives three real radiographs, so one study is known
to be positive, one indeterminate and one negative. The positive one is sent last (it is the
newest), so finding it on top shows the reading order, not the arrival order.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.support.data import RG1_UNCR, RG3_UNCR, cat_dx, testdata
from tests.support.models import place_thresholds, probabilities, tiny_package
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import storescu, wait_until

TOKEN = "browser-token"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for program in (CHROMIUM, CHROMEDRIVER):
        if not Path(program).exists():
            pytest.fail(f"{program} missing: run `make test` (installs chromium, "
                        "chromium-driver)", pytrace=False)  # fmt: skip
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic",
                 "--window-size=1500,1000", "--lang=en-US",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def csp_violations(driver) -> list[str]:
    """What the browser refused under the node's Content-Security-Policy since the last call
    (chromium logs each refused script, style, image or frame to the console)."""
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"]]  # fmt: skip


@contextmanager
def page_on_another_port(tmp_path: Path, html: str) -> Iterator[str]:
    """A page served from another port of the node's host, as Orthanc's Explorer is: the same
    *site* as the node for SameSite cookies, another origin. Yields its URL."""
    folder = tmp_path / "other-origin"
    folder.mkdir()
    (folder / "index.html").write_text(html)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _rows(driver) -> list[tuple[str, str]]:
    from selenium.webdriver.common.by import By

    return [(tr.get_attribute("data-study-uid"), tr.get_attribute("data-outcome"))
            for tr in driver.find_elements(By.CSS_SELECTOR, "#rows tr.study")]  # fmt: skip


@pytest.mark.browser
def test_worklist_page_in_chromium(tmp_path, node_factory, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    files = {"positive": testdata(RG3_UNCR), "doubt": testdata(RG1_UNCR), "negative": cat_dx()}
    package = tmp_path / "model"
    card = tiny_package(package)
    p = dict(zip(files, probabilities(package, list(files.values())), strict=True))
    assert p["positive"] - p["doubt"] > 0.1 and p["doubt"] - p["negative"] > 0.1, p
    place_thresholds(package, card, low=(p["negative"] + p["doubt"]) / 2,
                     high=(p["doubt"] + p["positive"]) / 2)  # fmt: skip
    config = write_node_config(
        tmp_path / "node", model={"package": str(package)},
        api={"token": TOKEN, "viewer_url": "http://viewer.invalid/?study={study_instance_uid}"},
    )  # fmt: skip
    node = node_factory(config).wait_ready()
    port = read_ports(config)[0]
    uid = {k: pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID
           for k, f in files.items()}  # fmt: skip
    for outcome in ("negative", "doubt", "positive"):  # the suspected study arrives last
        storescu([files[outcome]], port=port).check()

    def all_reported():
        r = httpx.get(f"{node.api_url}/api/worklist",
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)  # fmt: skip
        rows = r.json()["studies"]
        return len(rows) == 3 and all(s["state"] == "reported" for s in rows)

    wait_until(all_reported, timeout=120, what="three studies reported")

    driver = browser
    driver.get(node.api_url + "/")
    assert driver.find_element(By.ID, "login").is_displayed()  # the page needs the token
    assert driver.find_element(By.ID, "token").value_of_css_property("box-sizing") == "border-box"
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "sign-in").click()
    wait_until(lambda: driver.find_elements(By.ID, "worklist"), timeout=30,
               what="the worklist after signing in")  # fmt: skip
    assert csp_violations(driver) == []  # the sign-in form's style is a file, not inline

    assert _rows(driver) == [(uid["positive"], "positive"), (uid["doubt"], "doubt"),
                             (uid["negative"], "negative")]  # fmt: skip
    top = driver.find_element(By.CSS_SELECTOR, "#rows tr.study")
    colour = top.find_element(By.CSS_SELECTOR, ".badge").value_of_css_property("background-color")
    assert colour.replace(" ", "") in ("rgba(200,30,30,1)", "rgb(200,30,30)")
    assert "AI triage aid, not a diagnosis" in driver.find_element(By.ID, "notice").text
    assert "UNTRAINED DEMO" in driver.find_element(By.ID, "untrained-banner").text
    viewer = top.find_element(By.CSS_SELECTOR, "a.viewer").get_attribute("href")
    assert viewer == f"http://viewer.invalid/?study={uid['positive']}"
    wait_until(
        lambda: all(driver.execute_script("return arguments[0].complete && "
                                          "arguments[0].naturalWidth > 0", img)
                    for img in driver.find_elements(By.CSS_SELECTOR, "td.thumbnails img")),
        timeout=30, what="SC thumbnails loaded",
    )  # fmt: skip
    assert len(driver.find_elements(By.CSS_SELECTOR, "td.thumbnails img")) == 3

    driver.find_element(By.ID, "lang-uk").click()
    wait_until(lambda: driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "uk",
               timeout=30, what="the page in Ukrainian")  # fmt: skip
    assert "не діагноз" in driver.find_element(By.ID, "notice").text
    assert "НЕНАВЧЕНА" in driver.find_element(By.ID, "untrained-banner").text
    assert "підозра на перелом" in driver.find_element(By.CSS_SELECTOR, "#rows .badge").text

    Select(driver.find_element(By.ID, "filter-outcome")).select_by_value("negative")
    driver.find_element(By.ID, "apply-filters").click()
    wait_until(lambda: "outcome=negative" in driver.current_url, timeout=30,
               what="the filter applied")  # fmt: skip
    assert _rows(driver) == [(uid["negative"], "negative")]
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "uk"  # kept
    assert driver.find_element(By.ID, "total").text == "1"
    ARTIFACTS.mkdir(exist_ok=True)
    filtered = ARTIFACTS / "worklist-uk-filtered.png"
    assert driver.save_screenshot(str(filtered)) and filtered.stat().st_size > 10_000

    # The whole list in Ukrainian, the artefact a person looks at.
    driver.find_element(By.CSS_SELECTOR, "a.reset").click()
    wait_until(lambda: len(_rows(driver)) == 3, timeout=30, what="the full list again")
    shot = ARTIFACTS / "worklist-uk.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    assert csp_violations(driver) == []  # refreshes, thumbnails, language, filters

    # The API's documentation: Swagger UI from the node itself (no CDN), under the CSP.
    driver.get(node.api_url + "/docs")
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"),
               timeout=60, what="Swagger UI rendered")  # fmt: skip
    assert "dicomnode" in driver.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, ".opblock"), timeout=30,
               what="the operations listed from /openapi.json")  # fmt: skip
    assert csp_violations(driver) == []

    # A page on another port of the same host (same site: the cookie goes along) posts the
    # sign-out form: refused, the session stays.
    attack = ("<form id=f method=post action='" + node.api_url + "/logout'></form>"
              "<script>document.getElementById('f').submit()</script>")  # fmt: skip
    with page_on_another_port(tmp_path, attack) as evil:
        driver.get(evil)
        wait_until(lambda: driver.current_url.startswith(node.api_url), timeout=30,
                   what="the cross-origin form posted")  # fmt: skip
        assert "cross_origin" in driver.find_element(By.TAG_NAME, "body").text
    driver.get(node.api_url + "/")
    assert driver.find_elements(By.ID, "worklist")  # still signed in

    # The page's own sign-out button: the same POST from the node's origin goes through.
    driver.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait_until(lambda: driver.find_elements(By.ID, "login"), timeout=30, what="signed out")
    assert csp_violations(driver) == []
