"""A bounded fuzz run: schemathesis (every check) against the real daemon on loopback with a
token configured and the demo model loaded. A few hundred generated requests, valid and not:
no 5xx, no answer outside the schema (status, body, headers, content type), no schema-valid
request refused except as tests/schemathesis.toml documents."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from service_harness import serve

from edgead.service.app import create_app
from edgead.service.config import EdgeadConfig

TOKEN = "fuzz-token-0123456789abcdef"
HERE = Path(__file__).parent
DEMO = HERE.parent / "edgead" / "demo_model"
ST = shutil.which("st", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(ST is None, reason="schemathesis is not installed (pip install -e .[dev])")
def test_fuzzed_requests_get_no_5xx_and_fit_the_schema(tmp_path):
    config = EdgeadConfig(server={"token": TOKEN}, model={"path": str(DEMO)},
                          inspection={"data_dir": str(tmp_path / "data")})
    with serve(create_app(config)) as url:
        run = subprocess.run(
            [ST, "--config-file", str(HERE / "schemathesis.toml"), "--no-color", "run", f"{url}/openapi.json",
             "--checks", "all", "-H", f"Authorization: Bearer {TOKEN}", "--max-examples", "12", "--seed", "1",
             "--workers", "1", "--request-timeout", "60", "--suppress-health-check", "too_slow"],
            capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    generated = int(re.search(r"(\d+) generated", report).group(1))
    assert generated >= 200, report[-2000:]
