"""The operators' page in a real browser (Debian's Chromium driven by Playwright) against the
real daemon on loopback: the live view follows scored parts, the results list and a part's page
show the logged scores, a threshold change needs the token, and nothing is fetched from
anywhere but the daemon. Screenshots of each page go to $EDGEAD_SCREENSHOTS (docs/screenshots
when regenerating the docs)."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import cv2
import httpx
import numpy as np
import pytest
from service_harness import FakeModel, png_bytes, serve, solid

from edgead.service.app import create_app
from edgead.service.config import EdgeadConfig
from edgead.synthetic import make_part

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api")

TOKEN = "ui-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def score(client: httpx.Client, level: int) -> dict:
    r = client.post("/score", content=png_bytes(solid(level)), headers={"Content-Type": "image/png", **AUTH})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    config = EdgeadConfig(server={"token": TOKEN}, inspection={"data_dir": str(root / "data")})
    app = create_app(config, model=FakeModel(threshold=128.0))
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield url, client


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@contextmanager
def guarded_page(browser, url: str):
    """A desktop page that may fetch only from the daemon at ``url``."""
    host = urlparse(url).netloc
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    outside: list[str] = []

    def guard(route):
        target = urlparse(route.request.url)
        if target.scheme in ("data", "blob") or target.netloc == host:
            route.continue_()
        else:  # the page must work on a plant network with no internet
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    yield page
    context.close()
    assert outside == [], f"the page asked for addresses off this machine: {outside}"


@pytest.fixture()
def page(browser, station):
    with guarded_page(browser, station[0]) as p:
        yield p


def shot(page, name: str) -> None:
    folder = os.environ.get("EDGEAD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_live_view_follows_scored_parts(page, station):
    url, client = station
    page.goto(url + "/#/live")
    page.wait_for_function("document.getElementById('live-ready').textContent.startsWith('ready')")
    part = score(client, 250)  # bright: the fake model rejects it
    page.wait_for_function(f"document.body.dataset.lastPart === '{part['id']}'")
    assert page.text_content("#live-decision") == "REJECT"
    assert float(page.text_content("#live-score")) == pytest.approx(part["score"], rel=1e-3)
    page.wait_for_function("document.getElementById('live-frame').naturalWidth > 0")
    good = score(client, 10)
    page.wait_for_function(f"document.body.dataset.lastPart === '{good['id']}'")
    assert page.text_content("#live-decision") == "OK"
    shot(page, "live")


def test_results_list_and_part_page_show_the_logged_scores(page, station):
    url, client = station
    score(client, 10)
    reject = score(client, 240)
    page.goto(url + "/#/results")
    row = page.locator(f"a[href='#/results/{reject['id']}']")
    row.wait_for()
    assert page.locator("#results-body .decision.ok").count() > 0  
    page.select_option("#results-filter", "reject")
    page.wait_for_function("document.querySelectorAll('#results-body .decision.ok').length === 0")
    page.locator(f"a[href='#/results/{reject['id']}']").wait_for()
    shot(page, "results")
    page.locator(f"a[href='#/results/{reject['id']}']").click()
    page.wait_for_function(f"document.getElementById('part-id').textContent === '#{reject['id']}'")
    assert float(page.text_content("#part-score")) == pytest.approx(reject["score"], rel=1e-3)
    assert page.text_content("#part-decision") == "REJECT"
    page.wait_for_function("document.getElementById('part-frame').naturalWidth > 0")  # rejects keep their frame
    shot(page, "part")


def test_threshold_change_needs_the_token(page, station):
    url, client = station
    score(client, 100)
    page.goto(url + "/#/threshold")
    page.wait_for_function("document.getElementById('thr-count').textContent !== '0'")
    page.fill("#thr-value", "300")
    page.keyboard.press("Tab")
    assert "would change decision" in page.text_content("#thr-preview")
    page.click("#thr-form button[type=submit]")
    page.wait_for_function("document.getElementById('thr-result').textContent.includes('refused')")
    assert client.get("/model").json()["threshold"] == 128.0  # unchanged without the token
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")  # keyboard only
    page.fill("#thr-value", "300")
    page.click("#thr-form button[type=submit]")
    page.wait_for_function("document.getElementById('thr-result').textContent.startsWith('Threshold is now 300')")
    assert client.get("/model").json()["threshold"] == 300.0
    assert score(client, 250)["decision"] == "ok"  # a bright part now passes
    shot(page, "threshold")
    page.click("#thr-reset")
    page.wait_for_function("document.getElementById('thr-result').textContent.startsWith('Threshold is now 128')")


def test_model_page_and_phone_layout(browser, station):
    url, _ = station
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(url + "/#/model")
    page.wait_for_function("document.getElementById('model-facts').children.length > 0")
    assert "fake" in page.text_content("#model-facts")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
    shot(page, "model-phone")
    context.close()


def test_page_is_served_offline_and_small(station):
    url, client = station
    html = client.get("/", headers={"Accept": "text/html"})
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assert "http://" not in html.text and "https://" not in html.text
    total = len(html.content)
    for name in ("app.js", "style.css"):
        r = client.get(f"/ui/{name}")
        assert r.status_code == 200 and "http://" not in r.text and "https://" not in r.text
        total += len(r.content)
    assert total < 64 * 1024  # the whole page, for a Pi on a plant network
    assert client.get("/ui/../manifest.json").status_code == 404
    assert client.get("/").json()["ui"] == "/"  # API clients still get JSON


@pytest.fixture(scope="module")
def teach_station(model_dir, tmp_path_factory):
    """A daemon serving a copy of the steel-washer model with teaching on."""
    root = tmp_path_factory.mktemp("ui-teach")
    model = root / "model"
    shutil.copytree(model_dir, model)
    config = EdgeadConfig(server={"token": TOKEN}, model={"path": str(model)},
                          inspection={"data_dir": str(root / "data")}, teach={"enabled": True})
    with serve(create_app(config, source=None)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield url, client


@pytest.mark.slow
def test_reject_marked_good_then_rolled_back_from_the_page(browser, teach_station):
    url, client = teach_station
    with guarded_page(browser, url) as page:
        _mark_good_then_roll_back(page, url, client)


def _mark_good_then_roll_back(page, url: str, client: httpx.Client) -> None:
    brass = cv2.imencode(".png", make_part(np.random.default_rng(7), 128, None, "brass")[0])[1].tobytes()

    def decide() -> dict:
        r = client.post("/score", content=brass, headers={"Content-Type": "image/png", **AUTH})
        assert r.status_code == 200, r.text
        return r.json()

    first = decide()
    assert first["decision"] == "reject"  # a good part of a new variant: a false reject
    original = client.get("/model").json()["version"]

    page.goto(url + f"/#/results/{first['id']}")
    page.wait_for_selector("#good-form:not([hidden])")
    page.click("#good-form button[type=submit]")  # no token yet: refused, nothing taught
    page.wait_for_function("document.getElementById('good-result').textContent.includes('refused')")
    assert client.get("/model").json()["version"] == original
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    page.click("#good-form button[type=submit]")
    page.wait_for_function("document.getElementById('good-result').textContent.startsWith('Taught')", timeout=300_000)
    taught = client.get("/model").json()["version"]
    assert taught != original
    assert decide()["decision"] == "ok"  # the same part now passes

    page.goto(url + "/#/model")
    page.wait_for_selector(f"#versions-body button[data-version='{original}']")
    assert page.locator("#versions-body button").count() == 1  # the version in use has no button
    page.click(f"#versions-body button[data-version='{original}']")
    page.wait_for_function("document.getElementById('rollback-result').textContent.startsWith('Serving version')")
    assert client.get("/model").json()["version"] == original
    assert decide()["decision"] == "reject"  # rolled back: rejected again


def test_versions_say_when_teaching_is_off(page, station):
    url, _ = station
    page.goto(url + "/#/model")
    page.wait_for_function("document.getElementById('versions-state').textContent.includes('Teaching is off')")
    assert page.is_hidden("#versions-table")
