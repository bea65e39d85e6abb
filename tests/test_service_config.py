"""Configuration: TOML + EDGEAD_ environment + flags, validation messages, the documented
example, and `edgead serve` exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgead.errors import ConfigError
from edgead.service.config import EdgeadConfig, load_config
from edgead.service.main import build_parser, overrides_from_args, serve_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("EDGEAD_"):
            monkeypatch.delenv(key)


def test_defaults_are_safe():
    c = EdgeadConfig()
    assert c.server.host == "127.0.0.1" and c.token is None
    assert c.trigger.mode == "on_demand" and not c.gpio.enabled and c.inference.queue_size >= 1
    assert c.inspection.synchronous in ("normal", "full")


def test_precedence_file_env_flags(tmp_path, monkeypatch):
    toml = tmp_path / "c.toml"
    toml.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[model]\npath = "/m"\nthreads = 3\n'
                    '[source]\nspec = "folder:/frames"\n')
    c = load_config(toml)
    assert (c.server.port, c.server.host, c.model.threads, c.source.spec) == (9000, "0.0.0.0", 3, "folder:/frames")
    monkeypatch.setenv("EDGEAD_SERVER__PORT", "9100")
    monkeypatch.setenv("EDGEAD_MODEL__THREADS", "2")
    c = load_config(toml)
    assert (c.server.port, c.server.host, c.model.threads) == (9100, "0.0.0.0", 2)
    args = build_parser().parse_args(["--port", "9200", "--source", "none", "--data-dir", "/d"])
    c = load_config(toml, overrides_from_args(args))
    assert (c.server.port, c.server.host, c.model.threads, c.source.spec) == (9200, "0.0.0.0", 2, "none")
    assert str(c.inspection.data_dir) == "/d" and str(c.model.path) == "/m"


def test_every_bad_field_is_reported_with_its_origin(tmp_path, monkeypatch):
    toml = tmp_path / "bad.toml"
    toml.write_text('log_level = "loud"\n[server]\nport = 70000\nprot = 1\ntoken = "short"\n'
                    '[source]\nspec = "webcam:0"\n[gpio]\nreject_pin = 17\nalarm_pin = "GPIO17"\n')
    monkeypatch.setenv("EDGEAD_MODEL__THREADS", "0")
    with pytest.raises(ConfigError) as exc:
        load_config(toml, {"inference": {"queue_size": 0}})
    msg = str(exc.value)
    for expected in ("log_level:", "server.port:", "server.prot: Extra inputs", "server.token: must be at least 16",
                     "source.spec: source 'webcam:0': unknown kind", "gpio: alarm_pin and reject_pin use the same pin",
                     "model.threads:", "[from environment EDGEAD_MODEL__THREADS]", "inference.queue_size:",
                     "[from command line]", f"[from {toml}]"):
        assert expected in msg, expected
    assert "short" not in msg  # secrets are not echoed


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="needs a frame source"):
        load_config(None, {"trigger": {"mode": "continuous"}})
    with pytest.raises(ConfigError, match="gpio.trigger_pin"):
        load_config(None, {"trigger": {"mode": "gpio"}, "source": {"spec": "picamera2"}})
    with pytest.raises(ConfigError, match="trigger_active_high"):
        load_config(None, {"gpio": {"trigger_pin": 23, "trigger_pull": "none"}})
    with pytest.raises(ConfigError, match="width and height"):
        load_config(None, {"source": {"width": 640}})


def test_toml_syntax_and_missing_file(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_token_file(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-token-from-a-file\n")
    assert load_config(None, {"server": {"token_file": str(token)}}).token == "s3cret-token-from-a-file"
    with pytest.raises(ConfigError, match="token_file"):
        load_config(None, {"server": {"token_file": str(tmp_path / "missing")}})


def test_documented_example_is_valid(tmp_path):
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123\n")  # /etc/edgead/token on the Pi
    c = load_config(REPO / "deploy" / "edgead.toml", {"server": {"token_file": str(token)}})
    assert c.source.spec == "picamera2" and str(c.inspection.data_dir) == "/var/lib/edgead"
    assert c.server.host == "127.0.0.1"
    documented = (REPO / "deploy" / "edgead.toml").read_text()
    for section, model in EdgeadConfig.model_fields.items():  # every setting is documented
        fields = getattr(model.annotation, "model_fields", None)
        if fields is None:
            assert section in documented, section
            continue
        for name in fields:
            assert f"{name} =" in documented or f"[{section}.{name}]" in documented, f"{section}.{name}"


def test_serve_main_exit_codes(tmp_path, capsys, tampered_model_dir):
    assert serve_main(["--port", "70000", "--model", str(tmp_path)]) == 2
    assert "server.port" in capsys.readouterr().err
    assert serve_main(["--port", "8080"]) == 2
    assert "no model" in capsys.readouterr().err
    assert serve_main(["--model", str(tampered_model_dir), "--check"]) == 1
    err = capsys.readouterr().err
    assert "memory.q8.npz" in err and "Traceback" not in err


def test_serve_check_with_real_model(model_dir, capsys, tmp_path):
    assert serve_main(["--model", str(model_dir), "--data-dir", str(tmp_path), "--check"]) == 0
    assert "config ok" in capsys.readouterr().out


def test_serve_freezes_long_lived_objects_before_serving(model_dir, tmp_path, monkeypatch):
    """The daemon moves its imports and model out of the collector's reach before it listens, so
    a full collection does not rescan them mid-inspection (edgead.heap.freeze_long_lived_objects)."""
    import gc

    import edgead.service.main as service_main

    seen = {}

    def fake_run_server(app, config):
        seen["frozen"] = gc.get_freeze_count()
        return 0

    gc.unfreeze()
    monkeypatch.setattr(service_main, "run_server", fake_run_server)
    try:
        assert serve_main(["--model", str(model_dir), "--data-dir", str(tmp_path), "--source", "none"]) == 0
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
    assert seen["frozen"] > 1000
    assert gc.get_freeze_count() == 0

