"""The About-the-model page in Debian's headless chromium on a real node serving a package
validated on 9 images (3 fractures): the start-up log warns, the page shows the warning box
with the numbers, the metrics and operating points as tables (3 significant digits, CIs), and
the package's ROC, PR and reliability plots load under the node's Content-Security-Policy."""

from __future__ import annotations

import json
import re

import pytest

from tests.integration.test_worklist_browser import (  # noqa: F401 (fixture)
    browser,
    csp_violations,
)
from tests.support.models import small_validation_package
from tests.support.nodecfg import write_node_config
from tests.support.peers import wait_until
from tests.support.screens import save_screenshot, set_viewport

TOKEN = "about-browser-token"


def _loaded(driver, element) -> bool:
    return bool(driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", element))  # fmt: skip


def _rows(table) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    return [[cell.text for cell in tr.find_elements(By.CSS_SELECTOR, "th, td")]
            for tr in table.find_elements(By.TAG_NAME, "tr")]  # fmt: skip


@pytest.mark.browser
def test_about_page_in_chromium(tmp_path, node_factory, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    package = tmp_path / "model"
    small_validation_package(package)
    config = write_node_config(tmp_path / "node", api={"token": TOKEN},
                               model={"package": str(package), "runtime": "torch"})  # fmt: skip
    node = node_factory(config).wait_ready()

    # The start-up log: one WARNING line with the numbers.
    lines = [json.loads(x) for x in node.log_path.read_text().splitlines() if x.startswith("{")]
    [weak] = [x for x in lines if x.get("event") == "model validation evidence is weak"]
    assert weak["level"] == "warning" and "9 images (3 fractures)" in weak["warning"]

    driver = browser
    set_viewport(driver)  # 1280×800
    driver.get(node.api_url + "/about-model")
    driver.find_element(By.ID, "token").send_keys(TOKEN)  # the page needs the token
    driver.find_element(By.ID, "sign-in").click()
    wait_until(lambda: driver.find_elements(By.ID, "model-card"), timeout=30,
               what="the About page after signing in")  # fmt: skip
    assert driver.find_element(By.ID, "card-name").text == "small validation package"
    assert not driver.find_elements(By.ID, "about-untrained")

    box = driver.find_element(By.ID, "evidence-warnings")
    assert box.is_displayed()
    assert "validation: 9 images (3 fractures); fewer than 50 fractures" in box.text
    assert re.search(r"AUC 0\.833, 95 % CI 0\.\d{3}–1\.00 is wider than 0\.20", box.text)

    metrics = _rows(driver.find_element(By.ID, "card-metrics"))
    assert metrics[0][:4] == ["Data set", "Images", "Fractures", "ROC AUC (95 % CI)"]
    assert metrics[1][:3] == ["Validation", "9", "3"]
    assert re.fullmatch(r"0\.833 \(0\.\d{3}–1\.00\)", metrics[1][3]), metrics
    points = _rows(driver.find_element(By.ID, "card-operating-points"))
    assert [row[1:3] for row in points[1:]] == [["0.300", "Validation"], ["0.700", "Validation"]]
    assert points[1][3:] == ["1.00", "0.667"] and points[2][3:] == ["0.333", "1.00"]
    assert driver.find_element(By.ID, "card-intended-use").text.startswith("Triage aid")

    for name in ("roc", "pr", "reliability"):
        plot = driver.find_element(By.ID, f"plot-{name}")
        wait_until(lambda plot=plot: _loaded(driver, plot), timeout=30, what=f"the {name} plot")
        assert plot.get_attribute("src").endswith(f"/about-model/plots/{name}.png")
        assert driver.execute_script("return arguments[0].naturalWidth", plot) > 100
    save_screenshot(driver, "about")  # screenshot: about (make screenshots)
    assert csp_violations(driver) == []  # the plots are the node's own images

    driver.find_element(By.ID, "lang-uk").click()
    wait_until(lambda: driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "uk",
               timeout=30, what="the page in Ukrainian")  # fmt: skip
    box = driver.find_element(By.ID, "evidence-warnings")
    assert "валідація: 9 зображень (3 переломи); менше ніж 50 переломів" in box.text
    assert _rows(driver.find_element(By.ID, "card-metrics"))[1][:3] == ["Валідація", "9", "3"]
    save_screenshot(driver, "about-uk")
