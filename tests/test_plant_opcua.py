"""The OPC UA server on loopback with asyncua's own client: the Trigger method scores a part
through the same path as GET /score and answers with the decision and score the HTTP API
reports; LastResult, the counters, the state and one event per part follow; with a password
configured anonymous sessions are refused."""

from __future__ import annotations

import asyncio
import math
import socket

import cv2
import httpx
import pytest
from service_harness import FakeModel, serve, solid, wait_for

from edgead.service.app import create_app
from edgead.service.config import EdgeadConfig

asyncua = pytest.importorskip("asyncua")
NS = "urn:edgead:vision"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon(tmp_path, **opcua):
    frames = tmp_path / "frames"
    frames.mkdir()
    for name, value in (("a", 250), ("b", 40)):  # a bright part (reject), then a dark one (ok)
        cv2.imwrite(str(frames / f"{name}.png"), solid(value))
    port = free_port()
    cfg = EdgeadConfig(source={"spec": f"folder:{frames}"}, inspection={"data_dir": str(tmp_path / "data")},
                       opcua={"enabled": True, "port": port, **opcua})
    return create_app(cfg, model=FakeModel(name="washer")), f"opc.tcp://127.0.0.1:{port}/edgead/"


class Events:
    def __init__(self):
        self.received = []

    def event_notification(self, event):
        self.received.append(event)


async def session(url, http_url):
    from asyncua import Client

    async with Client(url) as client:
        idx = await client.get_namespace_index(NS)
        vs = await client.nodes.objects.get_child(f"{idx}:VisionSystem")

        async def value(*path):
            node = await vs.get_child([f"{idx}:{p}" for p in path])
            return await node.read_value()

        assert await value("State") == "Operational"
        assert await value("ModelName") == "washer"
        events = Events()
        sub = await client.create_subscription(50, events)
        etype = await client.nodes.root.get_child(
            ["0:Types", "0:EventTypes", "0:BaseEventType", f"{idx}:InspectionResultEventType"])
        await sub.subscribe_events(vs, etype)
        answers, last = [], []
        for n in (1, 2):
            answers.append(await vs.call_method(f"{idx}:Trigger"))
            for _ in range(200):  # LastResult follows on the server's own loop
                if await value("LastResult", "PartCounter") == n:
                    break
                await asyncio.sleep(0.05)
            last.append((await value("LastResult", "Decision"), await value("LastResult", "Score")))
        async with httpx.AsyncClient(base_url=http_url) as http:
            rows = (await http.get("/results")).json()["results"][::-1]
        for (decision, score, normalized, rid), row in zip(answers, rows):
            assert (decision, rid, row["origin"]) == (row["decision"], row["id"], "opcua")
            assert score == pytest.approx(row["score"]) and normalized == pytest.approx(row["normalized_score"])
        assert [a[0] for a in answers] == ["reject", "ok"]
        assert last == [(row["decision"], pytest.approx(row["score"])) for row in rows]
        assert await value("LastResult", "ResultId") == rows[1]["id"]
        assert (await value("Counters", "Ok"), await value("Counters", "Reject")) == (1, 1)
        for _ in range(200):
            if len(events.received) >= 2:
                break
            await asyncio.sleep(0.05)
        assert [(e.PartCounter, e.Decision) for e in events.received] == [(1, "reject"), (2, "ok")]
        assert events.received[0].Score == pytest.approx(rows[0]["score"])
        assert not math.isnan(events.received[1].LatencyMs)


def test_trigger_method_results_and_events(tmp_path):
    app, url = daemon(tmp_path)
    with serve(app) as http_url:
        asyncio.run(session(url, http_url))
        metrics = httpx.get(f"{http_url}/metrics").text
        assert 'edgead_output_triggers_total{outcome="queued",output="opcua"} 2.0' in metrics


async def login(url, user=None, password=None):
    from asyncua import Client

    client = Client(url)
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    async with client:
        idx = await client.get_namespace_index(NS)
        vs = await client.nodes.objects.get_child(f"{idx}:VisionSystem")
        return await (await vs.get_child(f"{idx}:State")).read_value()


def test_anonymous_access_is_off_with_a_password(tmp_path):
    token = "0123456789abcdef0123"
    app, url = daemon(tmp_path, username="line2")
    app.state.runtime.outputs.sinks[0].password = token  # as from server.token
    with serve(app):
        assert asyncio.run(login(url, "line2", token)) == "Operational"
        for user, password in ((None, None), ("line2", "wrong-password-123"), ("admin", token)):
            with pytest.raises(Exception):
                asyncio.run(login(url, user, password))
