"""deploy/push-model.sh against a real daemon: upload, reload through the API, symlink flip,
refusal of a tampered artifact, pruning. ssh/scp/rsync are local shims (the "Pi" is this box)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from service_harness import serve

from edgead.service.app import create_app
from edgead.service.config import EdgeadConfig

REPO = Path(__file__).resolve().parents[1]
TOKEN = "deploy-token-0123456789"
SHIMS = {
    # ssh HOST CMD...: run CMD here (stdin passes through for `bash -s`)
    "ssh": '#!/bin/bash\nshift\nexec bash -c "$*"\n',
    # scp/rsync [opts] SRC HOST:DST: copy locally
    "scp": '#!/bin/bash\nsrc="${@: -2:1}"; dst="${@: -1}"; cp -r "$src" "${dst#*:}"\n',
    "rsync": '#!/bin/bash\nsrc="${@: -2:1}"; dst="${@: -1}"; cp -r "$src." "${dst#*:}"\n',
}


@pytest.fixture()
def fake_pi(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in SHIMS.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(stat.S_IRWXU)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "EDGEAD_REMOTE_MODELS": str(tmp_path / "models"),
           "EDGEAD_REMOTE_TOKEN": str(token)}
    return env


def push(env, model: Path, port: int, keep: int = 3) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "deploy" / "push-model.sh"), "-p", str(port), "-k", str(keep), str(model), "pi"],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_push_model_reloads_flips_and_prunes(tmp_path, fake_pi, model_dir, tampered_model_dir):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(model_dir, models / "v1")
    (models / "current").symlink_to("v1")
    config = EdgeadConfig(model={"path": str(models / "current")}, server={"token": TOKEN},
                          inspection={"data_dir": str(tmp_path / "data")})
    app = create_app(config)
    staging = tmp_path / "staging"
    shutil.copytree(model_dir, staging / "washer")
    shutil.copytree(tampered_model_dir, staging / "washer-bad")
    shutil.copytree(model_dir, staging / "washer2")
    with serve(app) as url, httpx.Client(base_url=url) as client:
        port = int(url.rsplit(":", 1)[1])
        sha = client.get("/model").json()["sha256"]

        ok = push(fake_pi, staging / "washer", port)
        assert ok.returncode == 0, ok.stderr
        current = os.readlink(models / "current")
        assert current.startswith("washer-") and (models / current / "manifest.json").is_file()
        assert client.get("/model").json()["path"] == str(models / current)
        assert not list(models.glob(".incoming-*"))

        bad = push(fake_pi, staging / "washer-bad", port)
        assert bad.returncode == 1 and "HTTP 422" in bad.stderr and "keeps serving" in bad.stderr
        assert os.readlink(models / "current") == current  # not flipped
        assert client.get("/model").json()["sha256"] == sha

        again = push(fake_pi, staging / "washer2", port, keep=2)
        assert again.returncode == 0, again.stderr
        assert os.readlink(models / "current").startswith("washer2-")
        assert not (models / "v1").exists()  # pruned beyond the 2 newest
        assert (models / os.readlink(models / "current")).is_dir()

    wrong = subprocess.run([str(REPO / "deploy" / "push-model.sh"), str(tmp_path), "pi"], env=fake_pi,
                           capture_output=True, text=True)
    assert wrong.returncode == 1 and "not an edgead artifact" in wrong.stderr
