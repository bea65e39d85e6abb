"""hnswlib is optional (the ``hnsw`` extra): without it every default model loads and scores, and
an artifact that needs it says which extra to install."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgead.cli import main as cli_main
from edgead.demo import DEMO_MODEL
from edgead.errors import ArtifactError
from edgead.model import load_model
from edgead.scorer.search import registry

pytest.importorskip("hnswlib")  # the index below is built with it


@pytest.fixture()
def no_hnswlib(monkeypatch):
    """``import hnswlib`` fails from here on, as on a Pi without the extra."""
    monkeypatch.setitem(sys.modules, "hnswlib", None)


@pytest.fixture(scope="module")
def indexed_model_dir(model_dir, tmp_path_factory):
    """model_dir with an HNSW index of its bank (links-only, as export writes it with --hnsw yes)."""
    from edgead.artifact import read_manifest, read_manifest_json, sha256_file, update_manifest
    from edgead.bank.hnsw_file import strip_vectors
    from edgead.bank.store import load_bank
    from edgead.scorer.search.hnsw import build_hnsw_index

    copy = tmp_path_factory.mktemp("indexed") / "washer-indexed"
    shutil.copytree(model_dir, copy)
    bank = load_bank(copy, read_manifest(copy).files)[0]
    params = build_hnsw_index(bank, copy / "hnsw.bin")
    strip_vectors(copy / "hnsw.bin", bank)
    manifest = read_manifest_json(copy)
    entry = {"sha256": sha256_file(copy / "hnsw.bin"), "bytes": (copy / "hnsw.bin").stat().st_size}
    update_manifest(copy, files=dict(manifest["files"], **{"hnsw.bin": entry}),
                    patchcore=dict(manifest["patchcore"], hnsw=params))
    return copy


def test_no_edgead_module_imports_hnswlib():
    """A fresh interpreter that cannot import hnswlib imports every runtime module, loads the
    demo model and scores a part."""
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        sys.modules["hnswlib"] = None
        import edgead
        for m in pkgutil.walk_packages(edgead.__path__, "edgead."):
            importlib.import_module(m.name)
        import numpy as np
        from edgead.demo import DEMO_MODEL
        from edgead.model import load_model
        from edgead.synthetic import make_part
        model = load_model(DEMO_MODEL)
        print(model.search_backend, model.score(make_part(np.random.default_rng(2), 128, "scratch")[0]).score)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    backend, score = out.stdout.split()
    assert backend == "int8" and float(score) == pytest.approx(36.990410061312986, rel=1e-6)


@pytest.mark.parametrize("which", ["demo", "model_dir", "padim_model_dir", "indexed_model_dir"])
def test_default_models_serve_without_hnswlib(which, request, synthetic_images):
    """Every default model, including one whose bank (below the crossover) has an HNSW index,
    scores the same without hnswlib as with it."""
    from edgead.images import read_image

    path = DEMO_MODEL if which == "demo" else request.getfixturevalue(which)
    images = [read_image(p) for p in synthetic_images["good"][:1] + synthetic_images["bad"][:2]]
    with_lib = [load_model(path).score(im).score for im in images]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "hnswlib", None)
        model = load_model(path)
        without = [model.score(im).score for im in images]
    assert model.search_backend in ("int8", "mahalanobis")
    np.testing.assert_array_equal(without, with_lib)


def test_a_model_that_needs_hnsw_names_the_extra(indexed_model_dir, no_hnswlib, monkeypatch, capsys):
    with pytest.raises(ArtifactError, match=r"needs hnswlib: pip install 'edgead\[hnsw\]'.*python3-hnswlib"):
        load_model(indexed_model_dir, search="hnsw")
    # a bank over the crossover with its index: auto chooses hnsw and says the same
    monkeypatch.setattr(registry, "HNSW_CROSSOVER", 10)
    with pytest.raises(ArtifactError, match=r"edgead\[hnsw\]"):
        load_model(indexed_model_dir)
    assert cli_main(["info", str(indexed_model_dir)]) != 0
    err = capsys.readouterr().err
    assert "edgead[hnsw]" in err and "Traceback" not in err
