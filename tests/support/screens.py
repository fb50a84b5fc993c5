"""Screenshots of the pages at 1280×800, for people to look at (`make screenshots`).

Off by default; on when `DICOMNODE_SCREENSHOTS` names a folder (`make screenshots` sets it to
`test-artifacts/screenshots`, which is not committed). Browser tests call
`save_screenshot(driver, name)` where a page is worth seeing; `set_viewport` gives the same
1280×800 viewport to a test that checks the layout itself (no horizontal overflow).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ENV = "DICOMNODE_SCREENSHOTS"
WIDTH, HEIGHT = 1280, 800
ROOT = Path(__file__).resolve().parents[2]


def screenshots_dir() -> Path | None:
    """The folder screenshots go to; None when they are off."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    folder = Path(value)
    return folder if folder.is_absolute() else ROOT / folder


def set_viewport(driver: Any, width: int = WIDTH, height: int = HEIGHT) -> None:
    """The page's viewport exactly `width`×`height` CSS pixels at scale 1 (Chromium's device
    metrics override; a window size would include whatever the browser's frame takes)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def save_screenshot(driver: Any, name: str) -> Path | None:
    """Save what the browser shows at 1280×800 as `<name>.png` when screenshots are on;
    returns the file (None when off). The viewport stays 1280×800 afterwards."""
    folder = screenshots_dir()
    if folder is None:
        return None
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"screenshot name must be a plain file name: {name!r}")
    folder.mkdir(parents=True, exist_ok=True)
    set_viewport(driver)
    path = folder / f"{name}.png"
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f"chromium did not write {path}")
    return path
