"""The triage page in a real browser (Playwright driving the system Chromium) against a real
``rlad serve`` on loopback with a small iforest: rows sorted by score, a label set by a click and
stored (checked through the API), a wrong key showing a clear message and no data. Screenshots go
to ``tests/artifacts/`` and the README's ``docs/img/triage.png``."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

CHROMIUM = os.environ.get("RLAD_CHROMIUM", "/usr/bin/chromium")
PORT = 8193
BASE = f"http://127.0.0.1:{PORT}/detector"
KEY = "triage-test-key-0123456789"
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
COLUMNS = ["amount", "age", "hour", "count", "distance", "ratio"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -e '.[test]')"),
    pytest.mark.skipif(not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()),
                       reason=f"no browser at {CHROMIUM}: apt-get install -y chromium chromium-driver"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One ``rlad serve`` for the module, with 60 scored rows (a few far from training)."""
    from rlad.algorithms.registry import build_detector

    tmp = tmp_path_factory.mktemp("triage")
    rng = np.random.default_rng(0)
    build_detector("scaled", {"detector": "iforest", "columns": COLUMNS}, seed=0).fit(
        rng.normal(size=(400, 6)).astype(np.float32)).save(tmp / "model.pt")
    env = {**os.environ, "RLAD_API_KEY": KEY, "RAY_ADDRESS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "rlad.platform.cli", "serve", str(tmp / "model.pt"), "--port",
                             str(PORT), "--num-cpus", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if requests.get(f"{BASE}/info", headers={"X-API-Key": KEY}, timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or the app not deployed yet
                pass
            assert time.time() < deadline, "rlad serve did not answer within 120 s"
            time.sleep(0.5)
        X = rng.normal(size=(60, 6))
        X[:5] += rng.choice([-1, 1], size=(5, 6)) * 3.5
        r = requests.post(f"{BASE}/score", json={"rows": X.tolist()}, headers={"X-API-Key": KEY}, timeout=30)
        assert r.status_code == 200, r.text
        yield
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def open_page(browser, key: str, width: int = 1280, height: int = 900):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(f"{BASE}/ui/")
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Connect").press("Enter")  # keyboard, as an analyst without a mouse would
    return page


def test_rows_sorted_by_score_and_label_by_click(server, browser):
    page = open_page(browser, KEY)
    page.wait_for_selector("#rows tbody tr")
    page.wait_for_selector("#rows tbody td.why li")  # explanations arrived
    scores = [float(s) for s in page.locator("#rows tbody tr").evaluate_all("rs => rs.map(r => r.dataset.score)")]
    assert len(scores) == 50 and scores == sorted(scores, reverse=True)
    assert "rows 1–50 of 60" in page.locator("#page-info").inner_text()
    first = page.locator("#rows tbody tr").first
    row_id = first.get_attribute("data-id")
    first.get_by_role("button", name="Anomaly").click()
    page.wait_for_selector(f'tr[data-id="{row_id}"].label-anomaly')
    assert "labelled anomaly" in first.inner_text()
    page.wait_for_selector("#psi .barrow")
    page.screenshot(path=str(ARTIFACTS / "triage-1280.png"), full_page=False)
    shutil.copyfile(ARTIFACTS / "triage-1280.png", ROOT / "docs" / "img" / "triage.png")
    stored = requests.get(f"{BASE}/feedback", headers={"X-API-Key": KEY}, timeout=10).json()["rows"]
    assert any(f["row_id"] == row_id and f["label"] == "anomaly" for f in stored)
    small = open_page(browser, KEY, width=390, height=844)
    small.wait_for_selector("#rows tbody tr")
    small.wait_for_selector("#events li")  # the registry events carry the longest strings (checkpoint paths)
    small.wait_for_selector("#psi .barrow")
    wide = small.evaluate("Array.from(document.querySelectorAll('body *')).filter(e => e.scrollWidth > 390)"
                          ".map(e => e.tagName + '#' + e.id + ' ' + e.scrollWidth)")
    assert small.evaluate("document.documentElement.scrollWidth") <= 390, wide  # no sideways scroll on a phone
    small.screenshot(path=str(ARTIFACTS / "triage-390.png"))


def test_audit_sample_labels_carry_their_weight(server, browser):
    """With 25 rows on the page, the audit draws 10 of the 35 unlabelled rows below it; a label
    given there is stored with weight 3.5 (rows it stands for)."""
    page = open_page(browser, KEY)
    page.wait_for_selector("#rows tbody tr")
    page.get_by_label("Rows per page").select_option("25")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_function("document.querySelectorAll('#rows tbody tr').length === 25")
    lowest = min(float(s) for s in page.locator("#rows tbody tr").evaluate_all("rs => rs.map(r => r.dataset.score)"))
    page.get_by_role("button", name="Audit sample").click()
    page.wait_for_function("document.getElementById('page-info').textContent.startsWith('audit')")
    assert "audit: 10 of 35 unlabelled rows" in page.locator("#page-info").inner_text()
    rows = page.locator("#rows tbody tr")
    assert rows.count() == 10 and all(float(s) < lowest for s in rows.evaluate_all("rs => rs.map(r => r.dataset.score)"))
    row_id = rows.first.get_attribute("data-id")
    rows.first.get_by_role("button", name="Normal").click()
    page.wait_for_selector(f'tr[data-id="{row_id}"].label-normal')
    stored = requests.get(f"{BASE}/feedback", headers={"X-API-Key": KEY}, timeout=10).json()["rows"]
    assert [f["weight"] for f in stored if f["row_id"] == row_id] == [3.5]


def test_wrong_key_shows_message_and_no_data(server, browser):
    page = open_page(browser, "not-the-key-000000000")
    page.wait_for_function("document.getElementById('message').textContent.length > 0")
    assert "Wrong or missing API key" in page.locator("#message").inner_text()
    assert page.locator("#data").is_hidden() and page.locator("#rows tbody tr").count() == 0
    page.screenshot(path=str(ARTIFACTS / "triage-wrong-key.png"))
