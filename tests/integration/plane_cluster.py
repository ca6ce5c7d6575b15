# SPDX-License-Identifier: MIT
"""Helpers to run a real controller and real drones on loopback."""
import json
import os
import socket
import sqlite3
import time

import requests

from conftest import PLANE, wait_for


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pg_database():
    """A fresh database on the test PostgreSQL server (make test starts one), or a skip."""
    import pytest
    import subprocess
    import uuid
    base = os.environ.get("PLANE_TEST_PG_URL")
    if not base:
        pytest.skip("no PLANE_TEST_PG_URL (make test starts a server with scripts/pg-up.sh)")
    name = "it_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", base, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return base.rsplit("/", 1)[0] + "/" + name


class Controller:
    def __init__(self, procs, tmp_path, *extra, default_cluster="localhost:9090", port=None, db=None, name=None):
        self.procs = procs
        self.port = port or free_port()
        self.db = db or str(tmp_path / "controller.db")
        self.log = str(tmp_path / f"{name or 'controller'}.log")
        self.args = [PLANE, "controller", "--db", self.db, "--port", str(self.port)]
        if default_cluster:
            self.args += ["--default-cluster", default_cluster]
        self.args += list(extra)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.proc = self.procs.start(self.args, log=self.log)

        def up():
            assert self.proc.poll() is None, open(self.log).read()
            try:
                return requests.get(self.url + "/pub/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        wait_for(up, what="controller")
        return self

    def connect(self, key=None, tag=None, spawn=True, executable=None, user=None, auth=None, **spawn_config):
        body = {}
        if user is not None:
            body["user"] = user
        if auth is not None:
            body["auth"] = auth
        if key is not None:
            body["key"] = {"name": key}
            if tag is not None:
                body["key"]["tag"] = tag
        if spawn:
            sc = {"executable": executable if executable is not None else {"image": "mock"}}
            sc.update(spawn_config)
            body["spawn_config"] = sc
        return requests.post(self.url + "/ctrl/connect", json=body, timeout=10)

    def status(self, backend_id):
        return requests.get(f"{self.url}/pub/b/{backend_id}/status", timeout=5).json()

    def wait_status(self, backend_id, status, timeout=15):
        return wait_for(lambda: (lambda s: s if s.get("status") == status else None)(self.status(backend_id)),
                        timeout=timeout, what=f"{backend_id} {status}")

    def terminate(self, backend_id, hard=False):
        kind = "hard" if hard else "soft"
        return requests.post(f"{self.url}/ctrl/b/{backend_id}/{kind}-terminate", timeout=5)

    def state(self, cluster="localhost:9090"):
        return requests.get(f"{self.url}/ctrl/c/{cluster}/state", timeout=5).json()

    def sql(self, query, *args):
        if self.db.startswith("postgres"):
            import subprocess
            q = query.replace("?", "%s") % tuple(f"'{a}'" if isinstance(a, str) else str(a) for a in args)
            out = subprocess.run(["psql", self.db, "-AtF", "\t", "-P", "null=\\N", "-c", q], check=True,
                                 capture_output=True, text=True).stdout
            conv = {"\\N": None, "t": 1, "f": 0}
            return [tuple(conv[v] if v in conv else int(v) if v.lstrip("-").isdigit() else v
                          for v in line.split("\t")) for line in out.splitlines() if line]
        db = sqlite3.connect(self.db, timeout=10)
        try:
            rows = db.execute(query, args).fetchall()
            db.commit()
            return rows
        finally:
            db.close()


class Drone:
    def __init__(self, procs, tmp_path, controller, name, *extra, runtime="mock", cluster="localhost:9090"):
        self.procs = procs
        self.name = name
        self.controller = controller
        self.cluster = cluster
        self.db = str(tmp_path / f"{name}.db")
        self.log = str(tmp_path / f"{name}.log")
        self.data = str(tmp_path / f"{name}-data")
        self.args = [PLANE, "drone", "--controller-url", controller.url + "/", "--cluster", cluster,
                     "--name", name, "--runtime", runtime, "--db", self.db, "--data-dir", self.data, *extra]
        self.proc = None

    def start(self, wait=True):
        self.proc = self.procs.start(self.args, log=self.log)
        if wait:
            self.wait_connected()
        return self

    def wait_connected(self):
        def seen():
            assert self.proc.poll() is None, open(self.log).read()
            for d in self.controller.state(self.cluster)["drones"]:
                if d["node"]["name"]["Drone"] == self.name:
                    return True
            return False
        wait_for(seen, what=f"drone {self.name} registered")
        # Schedulable once it has sent a heartbeat.
        wait_for(lambda: self.controller.sql("SELECT last_local_time FROM drone JOIN node USING(id) WHERE name = ?",
                                             self.name)[0][0] is not None, what="first heartbeat")

    def logs(self):
        with open(self.log) as f:
            return f.read()


def sse_events(url, headers=None, until="terminated", timeout=15):
    """Reads a status stream until an event with status `until`; returns (events, raw text)."""
    events, raw = [], ""
    with requests.get(url, headers=headers or {}, stream=True, timeout=timeout) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        buf = ""
        deadline = time.time() + timeout
        for chunk in r.iter_content(chunk_size=None, decode_unicode=True):
            if time.time() > deadline:  # keep-alive comments would otherwise keep it open for ever
                raise AssertionError(f"no '{until}' event within {timeout} s: {events}")
            buf += chunk
            raw += chunk
            while "\n\n" in buf:
                block, buf = buf.split("\n\n", 1)
                lines = block.split("\n")
                data = [l[5:] for l in lines if l.startswith("data:")]
                if not data:
                    continue
                ids = [l[3:] for l in lines if l.startswith("id:")]
                ev = json.loads(data[0])
                events.append((ids[0] if ids else None, ev))
                if ev["status"] == until:
                    return events, raw
    return events, raw
