"""The worklist page in Debian's headless chromium (Selenium + chromedriver) on a real node.

The node runs a model package built here from the tiny arch; its thresholds are placed
between the probabilities the package gives three real radiographs, so one study is known
to be positive, one doubtful and one negative. The negative one is classified first by the
untrained package; then the node is restarted on the same database with a *trained* package
(the same weights, a card that says trained, another version) and the other two arrive: the
old result must keep its DEMO badge. The positive one is sent last (it is the newest), so
finding it on top shows the reading order, not the arrival order.

With `DICOMNODE_SCREENSHOTS` set (`make screenshots`) the pages are saved at 1280×800.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import shutil
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
from tests.support.screens import save_screenshot, set_viewport

TOKEN = "browser-token"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Where the analysis browser test still writes its pictures (new ones: `save_screenshot`).
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
def page_on_another_port(tmp_path: Path, html: str, name: str = "other-origin") -> Iterator[str]:
    """A page served from another port of the node's host, as Orthanc's Explorer is: the same
    *site* as the node for SameSite cookies, another origin. Yields its URL."""
    folder = tmp_path / name
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


def _overflow(driver) -> int:
    """How many CSS pixels the page is wider than the viewport (0: no horizontal scrolling),
    the worklist table included."""
    return int(driver.execute_script(
        "const t = document.getElementById('worklist');"
        "return Math.max(document.documentElement.scrollWidth - window.innerWidth,"
        "                t ? t.scrollWidth - t.clientWidth : 0,"
        "                t ? t.getBoundingClientRect().right - window.innerWidth : 0);"
    ))  # fmt: skip


def _selected(driver) -> str | None:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, "#rows tr.study.selected")
    return found[0].get_attribute("data-study-uid") if found else None


def _sign_in(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    if driver.find_elements(By.ID, "login"):
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "sign-in").click()
    wait_until(lambda: driver.find_elements(By.ID, "worklist"), timeout=30,
               what="the worklist after signing in")  # fmt: skip


def _reported(node, count: int):
    def check():
        r = httpx.get(f"{node.api_url}/api/worklist",
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)  # fmt: skip
        rows = r.json()["studies"]
        return len(rows) == count and all(s["state"] == "reported" for s in rows)

    return check


@pytest.mark.browser
def test_worklist_page_in_chromium(tmp_path, node_factory, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    from dicomnode.http.worklist_view import format_person_name
    from dicomnode.model.card import write_card

    files = {"positive": testdata(RG3_UNCR), "doubt": testdata(RG1_UNCR), "negative": cat_dx()}
    package = tmp_path / "model"
    card = tiny_package(package)
    p = dict(zip(files, probabilities(package, list(files.values())), strict=True))
    assert p["positive"] - p["doubt"] > 0.1 and p["doubt"] - p["negative"] > 0.1, p
    card = place_thresholds(package, card, low=(p["negative"] + p["doubt"]) / 2,
                            high=(p["doubt"] + p["positive"]) / 2)  # fmt: skip
    # The same weights under a card that says trained: what replacing the demo looks like.
    trained_package = tmp_path / "trained-model"
    trained_package.mkdir()
    for item in package.iterdir():
        shutil.copy(item, trained_package / item.name)
    write_card(trained_package, dataclasses.replace(
        card, name="trained test package", version="trained-2", trained=True,
        training_data="test: a card that says trained",
    ))  # fmt: skip
    data_dir = tmp_path / "node" / "var"
    uid = {k: pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID
           for k, f in files.items()}  # fmt: skip
    names = {k: format_person_name(str(pydicom.dcmread(f, stop_before_pixels=True).PatientName))
             for k, f in files.items()}  # fmt: skip

    # 1. The untrained package classifies the negative study.
    config = write_node_config(tmp_path / "node", model={"package": str(package)},
                               api={"token": TOKEN})  # fmt: skip
    node = node_factory(config).wait_ready()
    storescu([files["negative"]], port=read_ports(config)[0]).check()
    wait_until(_reported(node, 1), timeout=120, what="the demo's study reported")
    driver = browser
    driver.get(node.api_url + "/")
    assert driver.find_element(By.ID, "login").is_displayed()  # the page needs the token
    assert driver.find_element(By.ID, "token").value_of_css_property("box-sizing") == "border-box"
    _sign_in(driver, node.api_url + "/")
    assert csp_violations(driver) == []  # the sign-in form's style is a file, not inline
    assert "UNTRAINED DEMO" in driver.find_element(By.ID, "untrained-banner").text
    node.stop()

    # 2. The trained package replaces it (same database); the other two studies arrive.
    with page_on_another_port(tmp_path, "<title>viewer</title>", name="viewer") as viewer_page:
        config = write_node_config(
            tmp_path / "node2", model={"package": str(trained_package)},
            node={"data_dir": str(data_dir)},
            api={"token": TOKEN, "viewer_url": viewer_page + "?study={study_instance_uid}"},
        )  # fmt: skip
        node = node_factory(config).wait_ready()
        port = read_ports(config)[0]
        for outcome in ("doubt", "positive"):  # the suspected study arrives last
            storescu([files[outcome]], port=port).check()
        wait_until(_reported(node, 3), timeout=120, what="three studies reported")

        set_viewport(driver)  # 1280×800: what the page must fit
        _sign_in(driver, node.api_url + "/")
        assert _rows(driver) == [(uid["positive"], "positive"), (uid["doubt"], "doubt"),
                                 (uid["negative"], "negative")]  # fmt: skip
        assert not driver.find_elements(By.ID, "untrained-banner")  # the trained one serves
        top = driver.find_element(By.CSS_SELECTOR, "#rows tr.study")
        colour = top.find_element(By.CSS_SELECTOR, ".badge").value_of_css_property(
            "background-color")  # fmt: skip
        assert colour.replace(" ", "") in ("rgba(200,30,30,1)", "rgb(200,30,30)")
        assert "AI triage aid, not a diagnosis" in driver.find_element(By.ID, "notice").text
        assert _overflow(driver) <= 0
        heights = [tr.size["height"] for tr in driver.find_elements(By.CSS_SELECTOR, "#rows tr")]
        assert max(heights) <= 48, heights  # dense: no thumbnail in the row
        assert not driver.find_elements(By.CSS_SELECTOR, "#rows img:not([loading=lazy])")

        # Every result names its model: the demo's old result keeps its DEMO badge.
        def badge(outcome: str):
            row = driver.find_element(By.CSS_SELECTOR, f"tr[data-study-uid='{uid[outcome]}']")
            return row.find_element(By.CSS_SELECTOR, ".model-badge")

        assert badge("negative").text == "DEMO"
        assert "UNTRAINED DEMO" in badge("negative").get_attribute("title")
        assert badge("negative").value_of_css_property("font-weight") == "700"
        assert badge("positive").text == badge("doubt").text == "trained-2"
        # The patient's name as people write it.
        cell = driver.find_element(By.CSS_SELECTOR, f"tr[data-study-uid='{uid['negative']}'] "
                                                     "td.patient")  # fmt: skip
        assert cell.text == names["negative"] == "Wetzel, James, Chase"
        save_screenshot(driver, "worklist-en")

        # Keyboard: j/k (and arrows) move, the selected row shows its picture, Enter opens.
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("j")
        assert _selected(driver) == uid["positive"]
        driver.switch_to.active_element.send_keys("j")
        assert _selected(driver) == uid["doubt"]
        driver.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
        assert _selected(driver) == uid["negative"]
        driver.switch_to.active_element.send_keys("k")
        assert _selected(driver) == uid["doubt"]
        driver.switch_to.active_element.send_keys(Keys.ARROW_UP)
        assert _selected(driver) == uid["positive"]
        preview = "#rows tr.study.selected .preview img"
        wait_until(
            lambda: all(driver.execute_script("return arguments[0].complete && "
                                              "arguments[0].naturalWidth > 0", img)
                        for img in driver.find_elements(By.CSS_SELECTOR, preview))
            and driver.find_element(By.CSS_SELECTOR, preview).is_displayed(),
            timeout=30, what="the selected study's SC thumbnail shown",
        )  # fmt: skip
        save_screenshot(driver, "worklist-en-selected")
        worklist_tab = driver.current_window_handle
        driver.switch_to.active_element.send_keys(Keys.ENTER)
        wait_until(lambda: len(driver.window_handles) == 2, timeout=30, what="the viewer")
        driver.switch_to.window(next(h for h in driver.window_handles if h != worklist_tab))
        wait_until(lambda: uid["positive"] in driver.current_url, timeout=30,
                   what="the viewer opened on the study")  # fmt: skip
        driver.close()
        driver.switch_to.window(worklist_tab)

    # Sorting by a column is the server's (a link): lowest probability first, then highest.
    driver.find_element(By.ID, "sort-probability").click()
    wait_until(lambda: "sort=probability" in driver.current_url, timeout=30, what="sorted")
    assert [u for u, _ in _rows(driver)] == [uid["negative"], uid["doubt"], uid["positive"]]
    header = driver.find_element(By.CSS_SELECTOR, "th.col-probability")
    assert header.get_attribute("aria-sort") == "ascending"
    driver.find_element(By.ID, "sort-probability").click()
    wait_until(lambda: "order=desc" in driver.current_url, timeout=30, what="sorted again")
    assert [u for u, _ in _rows(driver)] == [uid["positive"], uid["doubt"], uid["negative"]]

    # Results of models no longer served can be hidden (the sort is kept).
    driver.find_element(By.ID, "filter-served-only").click()
    driver.find_element(By.ID, "apply-filters").click()
    wait_until(lambda: "served_only=1" in driver.current_url, timeout=30, what="old hidden")
    assert [u for u, _ in _rows(driver)] == [uid["positive"], uid["doubt"]]
    assert "order=desc" in driver.current_url
    driver.find_element(By.CSS_SELECTOR, "a.reset").click()
    wait_until(lambda: len(_rows(driver)) == 3, timeout=30, what="the full list again")

    driver.find_element(By.ID, "lang-uk").click()
    wait_until(lambda: driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "uk",
               timeout=30, what="the page in Ukrainian")  # fmt: skip
    assert "не діагноз" in driver.find_element(By.ID, "notice").text
    assert "підозра на перелом" in driver.find_element(By.CSS_SELECTOR, "#rows .badge").text
    assert badge("negative").text == "ДЕМО"
    assert _overflow(driver) <= 0
    save_screenshot(driver, "worklist-uk")

    Select(driver.find_element(By.ID, "filter-outcome")).select_by_value("negative")
    driver.find_element(By.ID, "apply-filters").click()
    wait_until(lambda: "outcome=negative" in driver.current_url, timeout=30,
               what="the filter applied")  # fmt: skip
    assert _rows(driver) == [(uid["negative"], "negative")]
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "uk"  # kept
    assert driver.find_element(By.ID, "total").text == "1"
    driver.find_element(By.CSS_SELECTOR, f"tr[data-study-uid='{uid['negative']}'] td.model").click()
    save_screenshot(driver, "worklist-uk-demo-badge")
    assert csp_violations(driver) == []  # refreshes, thumbnails, language, filters, keys

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
