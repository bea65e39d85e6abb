"""What a newcomer meets first: the sample data set, the workstation config and `serve --check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgead.cli import main
from edgead.demo import DEMO_MODEL, write_demo_frames
from edgead.service.config import load_config
from edgead.service.main import serve_main

REPO = Path(__file__).resolve().parents[1]


def test_write_dataset_gives_an_mvtec_set_the_demo_model_separates(tmp_path, capsys):
    from edgead.images import read_image
    from edgead.metrics_math import auroc
    from edgead.model import load_model

    root = tmp_path / "sample"
    assert main(["demo", "--write-dataset", str(root)]) == 0
    assert str(root) in capsys.readouterr().out
    assert len(list((root / "train/good").glob("*.png"))) == 60
    defects = sorted(p.name for p in (root / "test").iterdir() if p.name != "good")
    assert defects == ["blob", "chip", "scratch"]
    for d in defects:  # every defective test image has its mask
        names = {p.stem for p in (root / "test" / d).glob("*.png")}
        assert {p.stem.removesuffix("_mask") for p in (root / "ground_truth" / d).glob("*.png")} == names
    model = load_model(DEMO_MODEL)
    images = sorted((root / "test").glob("*/*.png"))
    scores = [model.score(read_image(p), with_map=False).score for p in images]
    labels = [int(p.parent.name != "good") for p in images]
    assert auroc(labels, scores) > 0.95  # the defects are real defects, not noise


def test_write_dataset_into_an_impossible_place_names_it(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--write-dataset", str(blocker / "sample")]) == 2
    err = capsys.readouterr().err
    assert str(blocker / "sample") in err and "Traceback" not in err


def test_check_fails_for_a_source_folder_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "no-such-frames"
    rc = serve_main(["--model", str(DEMO_MODEL), "--source", f"folder:{missing}", "--data-dir", str(tmp_path / "log"),
                     "--check"])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
    (tmp_path / "a-file").write_text("x")
    assert serve_main(["--model", str(DEMO_MODEL), "--source", f"folder:{tmp_path / 'a-file'}", "--check"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_check_and_start_up_name_the_inspection_log_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frames = write_demo_frames(tmp_path / "frames", n=4)
    assert serve_main(["--model", str(DEMO_MODEL), "--source", f"folder:{frames}", "--check"]) == 0
    out = capsys.readouterr()
    default_folder = str(tmp_path / "edgead-data")  # relative default, shown absolute
    assert default_folder in out.out
    assert f"inspection log in {default_folder}" in out.err  # the start-up log line


def test_workstation_config_runs_where_the_demo_wrote_its_frames(tmp_path, capsys, monkeypatch):
    config = load_config(REPO / "deploy/workstation.toml")
    assert config.token is None and config.server.host == "127.0.0.1"
    assert (REPO / config.model.path).resolve() == DEMO_MODEL  # the bundled demo model, from the repository root
    # a checkout of the repository where `edgead demo` has run once (its default --data-dir)
    (tmp_path / "edgead").mkdir()
    (tmp_path / "edgead" / "demo_model").symlink_to(DEMO_MODEL)
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "workstation.toml").write_text((REPO / "deploy/workstation.toml").read_text())
    monkeypatch.chdir(tmp_path)
    assert serve_main(["--config", "deploy/workstation.toml", "--check"]) == 2
    assert "var/demo/frames" in capsys.readouterr().err  # before the demo: the missing folder is named
    write_demo_frames(Path("var/demo/frames"), n=4)
    assert serve_main(["--config", "deploy/workstation.toml", "--check"]) == 0
    assert "config ok" in capsys.readouterr().out


@pytest.mark.parametrize("config", ["deploy/edgead.toml"])
def test_the_pi_config_says_what_it_is(config):
    text = (REPO / config).read_text()
    assert "Raspberry Pi" in text.split("\n\n")[0] and "deploy/workstation.toml" in text


def test_the_pi_config_on_a_workstation_points_at_the_workstation_config(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EDGEAD_SERVER__TOKEN_FILE", str(tmp_path / "token"))  # as on a machine without the Pi install
    assert serve_main(["--config", str(REPO / "deploy/edgead.toml"), "--check"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "token") in err and "deploy/workstation.toml" in err and "Traceback" not in err
