# SPDX-License-Identifier: MIT
"""The drone against a scripted controller (python3-websockets as the server): a Spawn
sent again is acked and never starts the backend a second time, also long after the
backend has ended (the controller resends actions whose ack it did not see)."""
import asyncio
import json
import time

import websockets

from conftest import PLANE, wait_for  # noqa: F401
from plane_cluster import free_port


def spawn_action(action_id, backend_id):
    now = int(time.time() * 1000)
    spawn = {"executable": {"image": "mock", "mock": {"exit_after_ms": 300}},
             "key": {"key": {"name": "k-" + backend_id, "namespace": "", "tag": ""},
                     "deadlines": {"renew_at": now + 30000, "soft_terminate_at": now + 40000,
                                   "hard_terminate_at": now + 50000}, "token": 1},
             "static_token": None}
    return {"Action": {"action_id": action_id, "backend_id": backend_id, "drone_id": 1,
                       "action": {"Spawn": spawn}}}


def test_a_resent_spawn_is_acked_and_never_starts_twice(procs, tmp_path):
    port = free_port()
    got = {"acks": [], "events": []}

    async def scenario():
        done = asyncio.get_running_loop().create_future()

        async def handler(ws, path=None):
            await ws.recv()  # the drone's handshake
            await ws.send(json.dumps({"version": {"version": "0.5.5", "git_hash": "abcd1234"}, "name": "co-fake"}))

            async def reader():
                async for raw in ws:
                    m = json.loads(raw)
                    if "AckAction" in m:
                        got["acks"].append(m["AckAction"]["action_id"])
                    elif "BackendEvent" in m:
                        ev = m["BackendEvent"]
                        got["events"].append((ev["backend_id"], ev["state"]["status"]))
                        await ws.send(json.dumps({"AckEvent": {"event_id": ev["event_id"]}}))
            read = asyncio.ensure_future(reader())

            async def until(cond, timeout=10):
                t0 = time.time()
                while not cond():
                    assert time.time() - t0 < timeout, got
                    await asyncio.sleep(0.02)

            await ws.send(json.dumps(spawn_action("ak-1", "b1")))
            await until(lambda: got["acks"].count("ak-1") == 1)
            # Sent again while it runs: acked again, not started again.
            await ws.send(json.dumps(spawn_action("ak-1", "b1")))
            await until(lambda: got["acks"].count("ak-1") == 2)
            await until(lambda: ("b1", "terminated") in got["events"])
            # Sent again after it ended: acked, and nothing runs.
            n = len(got["events"])
            await ws.send(json.dumps(spawn_action("ak-1", "b1")))
            await until(lambda: got["acks"].count("ak-1") == 3)
            await asyncio.sleep(1.0)
            assert got["events"][n:] == [], got["events"][n:]
            read.cancel()
            done.set_result(True)

        async with websockets.serve(handler, "127.0.0.1", port):
            procs.start([PLANE, "drone", "--controller-url", f"http://127.0.0.1:{port}/", "--cluster",
                         "localhost:9090", "--name", "dr-fake", "--runtime", "mock", "--db",
                         str(tmp_path / "d.db"), "--data-dir", str(tmp_path / "dd")],
                        log=str(tmp_path / "drone.log"))
            await asyncio.wait_for(done, 30)

    asyncio.run(scenario())
    # One life: started once, ended once.
    assert got["events"].count(("b1", "loading")) == 1, got["events"]
    assert got["events"].count(("b1", "terminated")) == 1, got["events"]
