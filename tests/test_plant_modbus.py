"""The Modbus TCP server on loopback with pymodbus's own client: a write to the trigger coil
scores a part through the same path as GET /score, and the registers then hold the decision
and score the HTTP API reports for it."""

from __future__ import annotations

import struct

import cv2
import httpx
import pytest
from service_harness import FakeModel, serve, solid, wait_for

from edgead.service.app import create_app
from edgead.service.config import EdgeadConfig

pytest.importorskip("pymodbus")


def u32(regs, at):
    return regs[at] << 16 | regs[at + 1]


def f32(regs, at):
    return struct.unpack(">f", struct.pack(">HH", regs[at], regs[at + 1]))[0]


@pytest.fixture()
def app(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for name, value in (("a", 250), ("b", 40)):  # a bright part (reject), then a dark one (ok)
        cv2.imwrite(str(frames / f"{name}.png"), solid(value))
    cfg = EdgeadConfig(source={"spec": f"folder:{frames}"}, inspection={"data_dir": str(tmp_path / "data")},
                       modbus={"enabled": True, "port": 0})
    return create_app(cfg, model=FakeModel(name="washer"))


def test_trigger_coil_and_register_map(app):
    from pymodbus.client import ModbusTcpClient

    rt = app.state.runtime
    with serve(app) as url, httpx.Client(base_url=url) as http:
        port = rt.outputs.sinks[0].port
        client = ModbusTcpClient("127.0.0.1", port=port)
        assert client.connect()
        try:
            bits = client.read_discrete_inputs(0, count=8).bits
            assert bits[0] is True and bits[4] is True  # ready, model loaded
            assert bits[2] is False  # no result yet
            assert client.read_input_registers(0, count=3).registers == [0, 0, 0]
            for expected_part, expected in ((1, "reject"), (2, "ok")):
                assert not client.write_coil(0, True).isError()
                wait_for(lambda: u32(client.read_input_registers(0, count=2).registers, 0) == expected_part)
                wait_for(lambda: not client.read_coils(0, count=1).bits[0])  # the coil drops with the result
                regs = client.read_input_registers(0, count=39).registers
                row = http.get("/results", params={"limit": 1}).json()["results"][0]
                assert row["origin"] == "modbus" and row["decision"] == expected
                assert regs[2] == {"ok": 1, "reject": 2}[row["decision"]]
                assert f32(regs, 7) == pytest.approx(row["score"], rel=1e-6)
                assert f32(regs, 9) == pytest.approx(row["normalized_score"], rel=1e-6)
                assert u32(regs, 3) == round(row["score"] * 1000)
                assert u32(regs, 5) == round(row["normalized_score"] * 1000)
                assert f32(regs, 11) == pytest.approx(row["threshold"])
                assert u32(regs, 14) == row["id"]
                bits = client.read_discrete_inputs(0, count=8).bits
                assert bits[2] is True and bits[5] is (expected == "ok") and bits[6] is (expected == "reject")
                assert regs[22] == sum(1 << i for i, b in enumerate(bits) if b)
            assert (u32(regs, 16), u32(regs, 18), u32(regs, 20)) == (1, 1, 0)  # ok, reject, error counters
            version = struct.pack(">16H", *regs[23:39]).rstrip(b"\0").decode()
            assert version == http.get("/model").json()["version"]
            assert client.read_holding_registers(0, count=39).registers == regs  # the read-only mirror
            assert client.write_register(0, 5).isError()  # holding registers cannot be written
        finally:
            client.close()
        metrics = http.get("/metrics").text
        assert 'edgead_output_triggers_total{outcome="queued",output="modbus"} 2.0' in metrics
        assert 'edgead_results_total{decision="reject",origin="modbus"} 1.0' in metrics


def test_a_port_in_use_is_a_clear_error():
    import socket

    from edgead.errors import ConfigError
    from edgead.outputs.metrics import ServiceMetrics
    from edgead.outputs.modbus import ModbusSink
    from edgead.service.config_plant import ModbusConfig

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sink = ModbusSink(ModbusConfig(enabled=True, port=port), ServiceMetrics())
        with pytest.raises(ConfigError, match=f"modbus: cannot listen on 127.0.0.1:{port}"):
            sink.start(station=None)
        sink.close()
