"""The deploy scripts, run. push-model.sh against a real daemon: upload, reload through the API,
symlink flip, refusal of a tampered artifact, pruning (ssh/scp/rsync are local shims: the "Pi" is
this box). install-pi.sh in a temporary root, the system commands it calls replaced by recorders."""

from __future__ import annotations

import os
import re
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


# install-pi.sh's system commands: each records its arguments in $STUB_LOG, one line a call
RECORD = 'echo "$(basename "$0") $*" >> "$STUB_LOG"\n'
INSTALL_STUBS = {
    **{name: "#!/bin/bash\n" + RECORD for name in ("apt-get", "usermod", "systemctl", "chown")},
    # users: the names in $STUB_USERS exist; useradd adds one
    "useradd": "#!/bin/bash\n" + RECORD + 'echo "${@: -1}" >> "$STUB_USERS"\n',
    "id": '#!/bin/bash\nif [ "$1" = -u ]; then echo "${STUB_UID:-0}"; else grep -qx "$1" "$STUB_USERS"; fi\n',
    "getent": '#!/bin/bash\n[ "$1 $2" = "group video" ]\n',  # no gpio group on this "Pi"
    "runuser": '#!/bin/bash\n' + RECORD + 'shift 3\nexec "$@"\n',  # runuser -u USER -- CMD...
    # owners cannot be set without root: record them, install the rest for real, inside the root only
    "install": '#!/bin/bash\n' + RECORD + 'case "${@: -1}" in "$EDGEAD_INSTALL_ROOT"/*) ;; *) exit 99 ;; esac\nargs=()\nwhile [ $# -gt 0 ]; do case "$1" in -o|-g) shift 2 ;; '
               '*) args+=("$1"); shift ;; esac; done\nexec /usr/bin/install "${args[@]}"\n',
    # python3 -m venv DIR: a venv whose python is this one and whose pip and edgead record
    "python3": '#!/bin/bash\nif [ "$1 $2" = "-m venv" ]; then\n' + RECORD
               + 'dir="${@: -1}"; case "$dir" in "$EDGEAD_INSTALL_ROOT"/*) ;; *) exit 99 ;; esac; mkdir -p "$dir/bin"\n'
               + 'printf \'#!/bin/bash\\nexec %s "$@"\\n\' "$STUB_PYTHON" > "$dir/bin/python"\n'
               + 'for tool in pip edgead; do printf \'#!/bin/bash\\necho "%s $*" >> "$STUB_LOG"\\n\' "$tool" '
               + '> "$dir/bin/$tool"; done\nchmod +x "$dir/bin/"*\nexit 0\nfi\nexec "$STUB_PYTHON" "$@"\n',
}


@pytest.fixture()
def fake_root(tmp_path):
    """(run install-pi.sh with these arguments -> CompletedProcess, the root it installs into,
    the recorded calls so far)."""
    import sys

    bin_dir, root = tmp_path / "stubs", tmp_path / "root"
    bin_dir.mkdir()
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    for name, body in INSTALL_STUBS.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(stat.S_IRWXU)
    log, users = tmp_path / "calls.log", tmp_path / "users"
    log.touch()
    users.write_text("root\nalice\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "EDGEAD_INSTALL_ROOT": str(root),
           "STUB_LOG": str(log), "STUB_USERS": str(users), "STUB_PYTHON": sys.executable}
    env.pop("SUDO_USER", None)

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(REPO / "deploy" / "install-pi.sh"), *args], env={**env, **extra_env},
                              capture_output=True, text=True, timeout=120)

    return run, root, lambda: log.read_text().splitlines()


def test_install_pi_creates_the_user_installs_and_enables(fake_root, tmp_path):
    run, root, calls = fake_root
    model = tmp_path / "washer"
    model.mkdir()
    (model / "manifest.json").write_text('{"name": "washer"}')
    ok = run("--model", str(model), "--admin", "alice")
    assert ok.returncode == 0, ok.stderr
    done = calls()
    apt = next(c for c in done if c.startswith("apt-get install"))
    assert {"python3-picamera2", "python3-lgpio", "python3-gpiozero", "python3-venv"} <= set(apt.split())
    assert [c for c in done if c.startswith("useradd")] == [
        f"useradd --system --user-group --home-dir {root}/var/lib/edgead --no-create-home --shell /usr/sbin/nologin edgead"]
    assert "usermod -aG video edgead" in done and "usermod -aG edgead alice" in done
    assert "group gpio missing" in ok.stderr  # warned, not fatal
    venv = root / "opt" / "edgead" / "venv"
    assert f"python3 -m venv --system-site-packages {venv}" in done
    pip = [c for c in done if c.startswith("pip install") and "--constraint" in c]
    assert len(pip) == 1 and pip[0].endswith(f" {REPO}")  # this source tree, apt's numpy pinned

    etc, state = root / "etc" / "edgead", root / "var" / "lib" / "edgead"
    assert (etc / "edgead.toml").read_text() == (REPO / "deploy" / "edgead.toml").read_text()
    token = (etc / "token").read_text().strip()
    assert re.fullmatch("[0-9a-f]{48}", token)
    assert stat.S_IMODE((etc / "token").stat().st_mode) == 0o640 and f"chown root:edgead {etc}/token" in done
    assert stat.S_IMODE((etc / "edgead.toml").stat().st_mode) == 0o640
    assert stat.S_IMODE((state / "models").stat().st_mode) == 0o2775
    current = state / "models" / "current"
    assert current.is_symlink() and os.readlink(current).startswith("washer-")
    assert (current / "manifest.json").read_text() == '{"name": "washer"}'
    assert (root / "etc" / "systemd" / "system" / "edgead.service").read_text() == \
        (REPO / "systemd" / "edgead.service").read_text()
    service = [c for c in done if c.startswith(("systemctl", "runuser", "edgead"))]
    assert service[:5] == ["systemctl daemon-reload", "systemctl enable edgead.service",
                           f"runuser -u edgead -- {venv}/bin/edgead serve --config {etc}/edgead.toml --check",
                           f"edgead serve --config {etc}/edgead.toml --check", "systemctl restart edgead.service"]

    # again, as an upgrade: the user, the token and an edited config stay; the shipped config is offered
    (etc / "edgead.toml").write_text("# edited on the line\n")
    before = len(calls())
    again = run("--no-start")
    assert again.returncode == 0, again.stderr
    redo = calls()[before:]
    assert not [c for c in redo if c.startswith("useradd")] and "systemctl restart edgead.service" not in redo
    assert (etc / "token").read_text().strip() == token
    assert (etc / "edgead.toml").read_text() == "# edited on the line\n"
    assert (etc / "edgead.toml.new").read_text() == (REPO / "deploy" / "edgead.toml").read_text()


def test_install_pi_refuses_before_changing_anything(fake_root, tmp_path):
    run, root, calls = fake_root
    not_root = run(STUB_UID="1000")
    assert not_root.returncode == 1 and "run as root" in not_root.stderr
    no_model = run("--model", str(tmp_path))
    assert no_model.returncode == 1 and "no manifest.json (not an edgead artifact)" in no_model.stderr
    assert run("--frobnicate").returncode == 1
    assert calls() == [] and not (root / "etc" / "edgead").exists()
    usage = run("--help")
    assert usage.returncode == 0 and "--model DIR" in usage.stdout and "set -e" not in usage.stdout
