"""What a Pi installs: the wheel's contents and metadata, and the boundary between the runtime
(`edgead`) and the workstation code (`edgead_export`, in the export/ folder)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    pytest.importorskip("setuptools")
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("builds the wheel from git's file list: a git checkout and git needed")
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # a copy of the tracked tree keeps build/ and *.egg-info out of the checkout
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        src = REPO / name
        if src.is_file():
            dst = build / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(build)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("edgead-*.whl")
    return zipfile.ZipFile(path)


def _packages(names: list[str]) -> set[str]:
    return {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}


def test_wheel_holds_the_runtime_and_the_workstation_package_under_their_own_names(wheel):
    names = wheel.namelist()
    packages = _packages(names)
    # every package folder in the tree is shipped (pyproject lists them by hand)
    in_tree = {p.parent.relative_to(REPO).as_posix().replace("/", ".")
               for p in (REPO / "edgead").rglob("__init__.py")}
    assert in_tree <= packages, f"missing from pyproject's packages list: {sorted(in_tree - packages)}"
    assert "edgead_export" in packages
    # no top-level package named `export` (a name other distributions use too)
    assert not any(n.startswith("export/") for n in names)
    assert {"edgead/demo_model/manifest.json", "edgead/demo_model/backbone.int8.onnx"} <= set(names)
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)


def test_wheel_metadata_keeps_torch_behind_the_export_extra(wheel):
    (meta_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    meta = Parser().parsestr(wheel.read(meta_name).decode())
    requires = meta.get_all("Requires-Dist")
    plain = [r for r in requires if "extra ==" not in r]
    assert plain and not any(r.lower().startswith(("torch", "onnxscript", "efficientnet")) for r in plain), plain
    assert any(r.startswith("torch") and 'extra == "export"' in r for r in requires)
    (eps_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    eps = wheel.read(eps_name).decode()
    assert "[edgead.workstation]" in eps and "edgead_export.cli:export_main" in eps


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO.parent)


def test_runtime_scores_without_ever_importing_the_workstation_package():
    code = """
import json, sys
from edgead.cli import main
from edgead.synthetic import make_part
import numpy as np, cv2, tempfile, os
img, _ = make_part(np.random.default_rng(0), size=128)
path = os.path.join(tempfile.mkdtemp(), "p.png"); cv2.imwrite(path, img)
import edgead
demo = os.path.join(os.path.dirname(edgead.__file__), "demo_model")
rc = main(["score", "--model", demo, path])
print(json.dumps({"rc": rc, "mods": sorted(m for m in sys.modules if m.split('.')[0] in ('edgead_export', 'torch'))}))
"""
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"rc": 0, "mods": []}


def test_export_without_the_workstation_extra_names_the_fix():
    # torch made unimportable, as on a Pi
    proc = _run("import sys; sys.modules['torch'] = None\n"
                "from edgead.cli import main; sys.exit(main(['export', '--help']))")
    assert proc.returncode == 2
    assert "edgead[export]" in proc.stderr and "Traceback" not in proc.stderr


def test_workstation_feature_loads_when_installed():
    pytest.importorskip("torch")
    from edgead import workstation

    assert workstation.available("export") and workstation.available("refit")
    assert callable(workstation.feature("refit"))
