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
    # a track with no ranked entry: one pgd_eot record on another threat model
    import json

    lone = json.loads(sorted((root / "results").rglob("*__pgd_eot__white.json"))[0].read_text())
    lone["threat_model"] = {"norm": "l2", "eps": 1.5}
    (root / "results" / "lone.json").write_text(json.dumps(lone))
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
    cells = " ".join(td.text for td in literature.find_elements(By.CSS_SELECTOR, "td"))
    assert "?" not in cells.split() and "not transcribed" not in cells and "_{" not in cells
    assert literature.find_elements(By.CSS_SELECTOR, "td small sub"), "DP_{DDPM} is rendered as a subscript"
    browser.save_screenshot(str(ARTIFACTS / "leaderboard-literature.png"))


OVERFLOW = """
const out = [];
for (const svg of document.querySelectorAll('svg')) {
  const box = svg.viewBox.baseVal;
  for (const t of svg.querySelectorAll('text')) {
    const b = t.getBBox();
    const m = t.getCTM && t.transform.baseVal.length ? t.transform.baseVal.consolidate().matrix : null;
    let [x0, y0, x1, y1] = [b.x, b.y, b.x + b.width, b.y + b.height];
    if (m) {  // rotated axis labels: map the box corners
      const pts = [[x0, y0], [x1, y0], [x0, y1], [x1, y1]].map(([x, y]) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]);
      x0 = Math.min(...pts.map(p => p[0])); x1 = Math.max(...pts.map(p => p[0]));
      y0 = Math.min(...pts.map(p => p[1])); y1 = Math.max(...pts.map(p => p[1]));
    }
    if (x0 < box.x - 0.5 || y0 < box.y - 0.5 || x1 > box.x + box.width + 0.5 || y1 > box.y + box.height + 0.5)
      out.push(t.textContent + ' @ ' + [x0, y0, x1, y1].map(v => v.toFixed(1)).join(','));
  }
}
return out;
"""


def _no_overflow(browser) -> None:  # noqa: ANN001
    overflowing = browser.execute_script(OVERFLOW)
    assert not overflowing, f"SVG text outside its chart: {overflowing[:5]}"


def test_front_page_figure_hidden_empty_track_and_pages(site_url, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{site_url}/index.html")
    assert browser.find_elements(By.CSS_SELECTOR, "figure.front svg circle"), "the front page's clean vs robust figure"
    empty = browser.find_elements(By.CSS_SELECTOR, "p.empty-track")
    assert empty and "no entry is ranked on this track yet" in empty[0].text
    hidden = empty[0].get_attribute("id")
    assert all(section.get_attribute("id") != hidden for section in browser.find_elements(By.CSS_SELECTOR, "section.board"))
    _no_overflow(browser)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "front-page.png"))
    nav = {a.text: a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "header nav a")}
    assert {"What the numbers mean", "Submit a defense", "Documentation"} <= set(nav)
    browser.get(nav["What the numbers mean"])
    assert "per-sample worst case" in browser.find_element(By.TAG_NAME, "body").text
    assert "Holm" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(nav["Submit a defense"])
    assert "bench new defense" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(f"{site_url}/index.html")
    browser.find_element(By.CSS_SELECTOR, "table.ranked td a").click()
    assert browser.find_elements(By.CSS_SELECTOR, "figure svg")
    _no_overflow(browser)
    legends = browser.execute_script(
        "return [...document.querySelectorAll('figure svg')].map(s => [...s.querySelectorAll('text')].map(t => t.textContent))")
    for labels in legends:
        series = [t for t in labels if t.startswith("robust: ")]
        assert len(series) == len(set(series)), f"duplicate series labels: {series}"
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "NFE" in body and "On Toy suite" in body  # the card shows the track's budgets
    browser.save_screenshot(str(ARTIFACTS / "entry-page.png"))
