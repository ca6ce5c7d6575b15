# SPDX-License-Identifier: MIT
"""The controller's proxy endpoint (spec §8) spoken by a test client: the
handshake, route lookups (held while a backend starts), keepalives, and
BackendRemoved notices."""
import asyncio
import json

import pytest
import websockets

from plane_cluster import Controller, Drone


@pytest.fixture
def cluster(procs, tmp_path):
    ctrl = Controller(procs, tmp_path).start()
    Drone(procs, tmp_path, ctrl, "dr-px").start()
    return ctrl


async def proxy_session(ctrl, name="px-test"):
    ws = await websockets.connect(ctrl.url.replace("http", "ws") + "/ctrl/c/localhost:9090/proxy-socket")
    await ws.send(json.dumps({"version": {"version": "0.5.5", "git_hash": "x"}, "name": name}))
    hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert hello["name"].startswith("co-") and hello["version"]["version"] == "0.5.5"
    return ws


async def next_msg(ws, tag, timeout=10):
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if tag in m:
            return m[tag]


def test_routes_keepalives_and_removals(cluster):
    async def run():
        ws = await proxy_session(cluster)
        slow = cluster.connect("k1", executable={"image": "m", "mock": {"ready_delay_ms": 700}},
                               user="alice", auth={"b": 2, "a": 1}).json()
        # Held until the backend is ready.
        await ws.send(json.dumps({"RouteInfoRequest": {"token": slow["token"]}}))
        r = await next_msg(ws, "RouteInfoResponse")
        assert r["token"] == slow["token"]
        info = r["route_info"]
        assert info["backend_id"] == slow["backend_id"]
        assert info["secret_token"] == slow["secret_token"]
        assert info["user"] == "alice" and info["user_data"] == {"a": 1, "b": 2}
        assert info["cluster"] == "localhost:9090" and info["address"].startswith("127.0.0.1:")
        # Unknown token: null at once.
        await ws.send(json.dumps({"RouteInfoRequest": {"token": "nope"}}))
        r = await next_msg(ws, "RouteInfoResponse")
        assert r == {"token": "nope", "route_info": None}
        # Keepalive of a live backend: silence; terminated: BackendRemoved.
        await ws.send(json.dumps({"KeepAlive": slow["backend_id"]}))
        cluster.terminate(slow["backend_id"], hard=True)
        removed = await next_msg(ws, "BackendRemoved")
        assert removed == {"backend": slow["backend_id"]}
        await ws.send(json.dumps({"KeepAlive": slow["backend_id"]}))
        assert await next_msg(ws, "BackendRemoved") == {"backend": slow["backend_id"]}
        await ws.send(json.dumps({"RouteInfoRequest": {"token": slow["token"]}}))
        assert (await next_msg(ws, "RouteInfoResponse"))["route_info"] is None
        # Garbage is dropped and the session goes on.
        await ws.send("not json")
        await ws.send(json.dumps({"Bogus": 1}))
        # The certificate lease (§8.4): granted, then held for a minute, even against its holder.
        await ws.send(json.dumps({"CertManagerRequest": "CertLeaseRequest"}))
        assert (await next_msg(ws, "CertManagerResponse")) == {"CertLeaseResponse": {"accepted": True}}
        await ws.send(json.dumps({"CertManagerRequest": "CertLeaseRequest"}))
        assert (await next_msg(ws, "CertManagerResponse")) == {"CertLeaseResponse": {"accepted": False}}
        state = cluster.state()
        assert [p["name"] for p in state["proxies"]] == [{"Proxy": "px-test"}]
        await ws.close()
    asyncio.run(run())


def test_keepalives_hold_off_the_idle_sweep(cluster):
    async def run():
        ws = await proxy_session(cluster)
        kept = cluster.connect("kept", max_idle_seconds=2).json()["backend_id"]
        idle = cluster.connect("idle", max_idle_seconds=2).json()["backend_id"]
        for _ in range(16):  # 8 s of traffic on one of them
            await ws.send(json.dumps({"KeepAlive": kept}))
            await asyncio.sleep(0.5)
        assert cluster.status(idle)["status"] == "terminated"
        assert cluster.status(kept)["status"] == "ready"
        await ws.close()
    asyncio.run(run())


def test_bad_handshakes_are_dropped(cluster):
    async def run():
        ws = await websockets.connect(cluster.url.replace("http", "ws") + "/ctrl/c/localhost:9090/proxy-socket")
        await ws.send(json.dumps({"version": {"version": "0.5.5", "git_hash": ""}, "name": "dr-not-a-proxy"}))
        await ws.recv()  # the controller's handshake comes first (§6)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        ws = await websockets.connect(cluster.url.replace("http", "ws") + "/ctrl/c/localhost:9090/drone-socket")
        await ws.send("garbage")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    asyncio.run(run())
