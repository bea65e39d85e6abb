"""The API's own documentation: /docs works on a network without internet (Swagger UI from a
package, checked in Debian's Chromium with every off-machine request blocked), shows the bearer
scheme, and the schema documents the 400 the daemon answers to invalid input, not FastAPI's 422."""

from __future__ import annotations

import re
import shutil
from urllib.parse import urlparse

import httpx
import pytest
from service_harness import FakeModel, serve

from edgead.service.app import create_app
from edgead.service.config import EdgeadConfig

TOKEN = "docs-token-0123456789abcdef"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    config = EdgeadConfig(server={"token": TOKEN}, inspection={"data_dir": str(root / "data")})
    with serve(create_app(config, model=FakeModel())) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield url, client


def test_docs_page_names_no_address_off_the_machine(daemon):
    url, client = daemon
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert re.findall(r"https?://", html) == [], page
        for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert asset.startswith("/") and client.get(asset).status_code == 200, asset


def test_schema_documents_400_with_the_error_body_not_422(daemon):
    _, client = daemon
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in str(schema)
    error = {"$ref": "#/components/schemas/ErrorOut"}
    for path, method in (("/results", "get"), ("/results/{result_id}", "get"), ("/threshold", "put"),
                         ("/model/reload", "post"), ("/score", "post")):
        responses = schema["paths"][path][method]["responses"]
        assert responses["400"]["content"]["application/json"]["schema"] == error, (path, method)
    # a 422 that the daemon really answers (an artifact it cannot load) stays documented
    assert "bad artifact" in schema["paths"]["/model/reload"]["post"]["responses"]["422"]["description"]
    assert "422" not in schema["paths"]["/results"]["get"]["responses"]
    r = client.get("/results", params={"limit": "many"})
    assert r.status_code == 400 and set(r.json()) == {"error", "detail"}


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_docs_render_offline_in_a_browser_with_the_authorize_button(daemon):
    sync_api = pytest.importorskip("playwright.sync_api")
    url, _ = daemon
    host = urlparse(url).netloc
    outside: list[str] = []

    def guard(route):
        if urlparse(route.request.url).netloc == host or route.request.url.startswith("data:"):
            route.continue_()
        else:  # a plant network has no internet
            outside.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", guard)
            page.goto(url + "/docs")
            page.locator(".swagger-ui .info .title").wait_for()
            assert "edgead" in page.text_content(".swagger-ui .info .title")
            page.locator(".opblock-summary-path[data-path='/score']").first.wait_for()
            page.click("button.authorize")
            page.locator(".auth-container").first.wait_for()
            assert "(http, Bearer)" in page.text_content(".auth-container")
        finally:
            browser.close()
    assert outside == [], f"/docs asked for addresses off this machine: {outside}"
