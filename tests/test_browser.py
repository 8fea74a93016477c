"""The built site in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium),
served from 127.0.0.1: sort a column, filter, open an entry page; a screenshot is kept.

Skipped only outside CI when Chromium is not installed; `.ci/run` installs it and sets CI=true.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.publish.leaderboard import build_site
from bench.harness.perf import write_synthetic_records

CHROMIUM = shutil.which("chromium") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("BENCH_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER) and not os.environ.get("CI"),
    reason="Chromium/ChromeDriver not installed (apt-get install chromium chromium-driver); CI installs them",
)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    write_synthetic_records(root / "results", 200)
    shutil.copytree(Path(__file__).resolve().parents[1] / "results" / "literature", root / "results" / "literature")
    build_site(root / "results", root / "site")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root / "site")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER or "/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def _column(driver, table, header_text: str) -> list[float]:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    headers = [th.text.replace("▲", "").replace("▼", "").strip() for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    index = headers.index(header_text)
    return [float(row.find_elements(By.TAG_NAME, "td")[index].get_attribute("data-value"))
            for row in table.find_elements(By.CSS_SELECTOR, "tbody tr") if row.is_displayed()]


def test_sort_filter_and_open_an_entry(site_url, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{site_url}/index.html")
    table = browser.find_element(By.CSS_SELECTOR, "table.sortable")
    header = next(th for th in table.find_elements(By.CSS_SELECTOR, "thead th") if th.text.startswith("Clean %"))
    header.click()
    values = _column(browser, table, "Clean %")
    assert values == sorted(values, reverse=True) and "sorted-desc" in header.get_attribute("class")
    header.click()
    values = _column(browser, table, "Clean %")
    assert values == sorted(values)

    browser.find_element(By.ID, "filter").send_keys("_addt")
    visible = [r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed()]
    assert visible and all("_addt" in r.text for r in visible)
    assert len(visible) < len(table.find_elements(By.CSS_SELECTOR, "tbody tr"))

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "leaderboard-index.png"))
    link = visible[0].find_element(By.CSS_SELECTOR, "td a")
    entry = link.text
    link.click()
    assert browser.find_element(By.ID, "entry-title").text == entry
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Defense card" in body and "Stochastic streams" in body and "Runs (" in body
    assert browser.find_elements(By.CSS_SELECTOR, "figure svg"), "entry page has build-time SVG plots"
    browser.save_screenshot(str(ARTIFACTS / "leaderboard-entry.png"))
    assert (ARTIFACTS / "leaderboard-index.png").stat().st_size > 10_000


def test_rank_intervals_literature_and_width(site_url, browser) -> None:
    import re

    from selenium.webdriver.common.by import By

    browser.get(f"{site_url}/index.html")
    # the ranked tables fit a 1280-px window: nothing scrolls sideways
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1280
    ranks = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "table.ranked td.rank")]
    assert ranks and all(re.fullmatch(r"\d+(–\d+)?", r) for r in ranks)
    assert any("–" in r for r in ranks), "some entries are indistinguishable: their rank is an interval"
    incomplete = browser.find_elements(By.CSS_SELECTOR, "table.incomplete tbody tr")
    assert incomplete and "no record for diffhammer" in incomplete[0].text
    literature = browser.find_element(By.ID, "literature")
    assert "reported in the papers, not measured here" in literature.text
    rows = literature.find_elements(By.CSS_SELECTOR, "table.literature-table tbody tr")
    assert len(rows) > 20 and any("ADDT" in r.text for r in rows)
    protocol = browser.find_element(By.CSS_SELECTOR, "details.protocol summary")
    assert "ranking attacks pgd_eot, aa_rand_fixed, diffhammer" in protocol.text
    browser.save_screenshot(str(ARTIFACTS / "leaderboard-literature.png"))
