# SPDX-License-Identifier: MIT
"""`plane dns` (spec §9, §17) against a real controller, queried with dig.

A proxy's certificate lease and TXT record are driven through the
controller's proxy socket (spec §8.4) by a raw WebSocket client, so each
step of a DNS-01 challenge can be observed from outside."""
import os
import signal
import socket
import subprocess

import pytest

from conftest import PLANE, wait_for
from plane_cluster import Controller, free_port
from ws_raw import WS, handshake

CLUSTER = "plane.test"


class Dns:
    def __init__(self, procs, tmp_path, controller_url, *extra, name="ns-test"):
        self.log = str(tmp_path / f"{name}.log")
        self.procs, self.controller_url, self.extra, self.name = procs, controller_url, extra, name

    def start(self):
        # UDP and TCP must both be free on the port: retry on the rare clash.
        for _ in range(5):
            self.port = free_port()
            self.proc = self.procs.start([PLANE, "dns", "--controller-url", self.controller_url,
                                          "--port", str(self.port), "--host", "127.0.0.1",
                                          "--name", self.name, *self.extra], log=self.log)
            if self._listening():
                return self
        raise AssertionError(open(self.log).read())

    def _listening(self):
        def ready():
            if self.proc.poll() is not None:
                return "exited"
            s = socket.socket()
            try:
                s.connect(("127.0.0.1", self.port))
                return "up"
            except OSError:
                return None
            finally:
                s.close()
        return wait_for(ready, what="plane dns listening") == "up"

    def wait_linked(self):
        wait_for(lambda: "connected to controller" in open(self.log).read(), what="dns linked")


def dig(port, name, rtype="TXT", *opts):
    out = subprocess.run(["dig", "-p", str(port), "@127.0.0.1", name, rtype, "+tries=1", "+time=8", *opts],
                         capture_output=True, text=True, timeout=30).stdout
    status = [l for l in out.splitlines() if "->>HEADER<<-" in l]
    assert status, out
    answers = []
    section = False
    for line in out.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            section = True
        elif section and not line.strip():
            section = False
        elif section:
            answers.append(line.split())
    flags = [l for l in out.splitlines() if l.startswith(";; flags:")][0]
    return status[0].split("status: ")[1].split(",")[0], answers, flags


class FakeProxy:
    """A proxy's controller socket (spec §8), raw."""

    def __init__(self, ctrl, name, cluster=CLUSTER):
        self.ws = WS(ctrl.port, f"/ctrl/c/{cluster}/proxy-socket")
        assert self.ws.status == 101
        handshake(self.ws, name)

    def ask(self, request):
        self.ws.send({"CertManagerRequest": request})
        return self.ws.recv()["CertManagerResponse"]

    def lease(self):
        return self.ask("CertLeaseRequest")["CertLeaseResponse"]["accepted"]

    def set_txt(self, value):
        return self.ask({"SetTxtRecord": {"txt_value": value}})["SetTxtRecordResponse"]["accepted"]

    def release(self):
        self.ws.send({"CertManagerRequest": "ReleaseCertLease"})


@pytest.fixture
def setup(procs, tmp_path):
    ctrl = Controller(procs, tmp_path).start()
    dns = Dns(procs, tmp_path, ctrl.url + "/").start()
    dns.wait_linked()
    return ctrl, dns


def test_txt_present_while_the_challenge_is_held_and_gone_after(setup):
    ctrl, dns = setup
    name = "_acme-challenge." + CLUSTER
    assert dig(dns.port, name)[:2] == ("NOERROR", [])

    a, b = FakeProxy(ctrl, "px-one"), FakeProxy(ctrl, "px-two")
    assert a.lease() is True
    assert b.lease() is False           # the lease holds for every other proxy
    assert a.lease() is False           # and for its holder, within the minute (§8.4)
    assert b.set_txt("not-the-holder") is False
    assert dig(dns.port, name)[:2] == ("NOERROR", [])
    value = "x" * 43
    assert a.set_txt(value) is True

    for opts in ((), ("+tcp",), ("+noedns",)):
        status, answers, flags = dig(dns.port, name, "TXT", *opts)
        assert status == "NOERROR"
        assert answers == [[name + ".", "1", "IN", "TXT", f'"{value}"']]
        assert " aa" in flags
    # Mixed case (0x20) asks the same, and the answer keeps the case asked.
    status, answers, _ = dig(dns.port, "_ACME-Challenge.Plane.TEST")
    assert status == "NOERROR" and answers == [["_ACME-Challenge.Plane.TEST.", "1", "IN", "TXT", f'"{value}"']]

    assert a.set_txt("y" * 43) is True
    assert dig(dns.port, name)[1][0][4] == '"' + "y" * 43 + '"'

    a.release()
    wait_for(lambda: dig(dns.port, name)[:2] == ("NOERROR", []), what="TXT gone after the release")
    assert b.lease() is True            # free again for the next proxy
    b.release()
    a.ws.close()
    b.ws.close()


def test_other_names_and_types(setup):
    ctrl, dns = setup
    assert dig(dns.port, "_acme-challenge." + CLUSTER, "A")[0] == "NOTIMP"
    assert dig(dns.port, "_acme-challenge." + CLUSTER, "AAAA")[0] == "NOTIMP"
    assert dig(dns.port, "www.example.com")[0] == "REFUSED"
    assert dig(dns.port, CLUSTER)[0] == "REFUSED"
    assert dig(dns.port, "_acme-challenge.bad_name.test")[0] == "NXDOMAIN"
    assert dig(dns.port, "_acme-challenge." + CLUSTER, "TXT", "-c", "CH")[0] == "REFUSED"
    assert dig(dns.port, "_acme-challenge." + CLUSTER, "TXT", "+tcp")[0] == "NOERROR"


def test_zone(procs, tmp_path):
    ctrl = Controller(procs, tmp_path).start()
    dns = Dns(procs, tmp_path, ctrl.url + "/", "--zone", "Acme.Example.", name="ns-zone").start()
    dns.wait_linked()
    p = FakeProxy(ctrl, "px-zone")
    assert p.lease() and p.set_txt("v" * 43)
    status, answers, _ = dig(dns.port, CLUSTER + ".acme.example")
    assert status == "NOERROR" and answers[0][4] == '"' + "v" * 43 + '"'
    assert dig(dns.port, "acme.example")[:2] == ("NOERROR", [])       # the apex
    assert dig(dns.port, "xplane.test.notacme.example")[0] == "REFUSED"
    assert dig(dns.port, "_acme-challenge." + CLUSTER)[0] == "REFUSED"  # outside the zone
    assert dig(dns.port, "other.test.acme.example")[:2] == ("NOERROR", [])
    p.ws.close()


def test_garbage_and_a_missing_controller(setup):
    ctrl, dns = setup
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5)
    # A header with a broken question: FORMERR with the same id.
    u.sendto(bytes([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, 0x41]), ("127.0.0.1", dns.port))
    reply = u.recv(512)
    assert reply[:2] == b"\x12\x34" and reply[2] & 0x80 and reply[3] & 0x0F == 1
    # Too short for a header, or a response: no answer, and the server goes on.
    u.sendto(b"\x00\x01", ("127.0.0.1", dns.port))
    u.sendto(bytes([0, 1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0]), ("127.0.0.1", dns.port))
    u.close()
    # TCP: a length prefix promising more than arrives, then a close.
    t = socket.create_connection(("127.0.0.1", dns.port))
    t.sendall(b"\x01\x00abc")
    t.close()
    assert dig(dns.port, "_acme-challenge." + CLUSTER)[0] == "NOERROR"

    ctrl.proc.send_signal(signal.SIGTERM)
    ctrl.proc.wait(10)
    wait_for(lambda: dig(dns.port, "_acme-challenge." + CLUSTER)[0] == "SERVFAIL",
             what="SERVFAIL without a controller")
    assert dig(dns.port, "www.example.com")[0] == "REFUSED"
    assert dns.proc.poll() is None


def test_options(tmp_path):
    def run(*args):
        return subprocess.run([PLANE, "dns", *args], capture_output=True, text=True, timeout=10)
    r = run()
    assert r.returncode == 2 and "--controller-url is required" in r.stderr
    r = run("--controller-url", "http://127.0.0.1:1/", "--port", "0")
    assert r.returncode == 2 and "invalid port" in r.stderr
    r = run("--controller-url", "http://127.0.0.1:1/", "--name", "px-wrong")
    assert r.returncode == 2 and "invalid --name" in r.stderr
    r = run("--controller-url", "http://127.0.0.1:1/", "--host", "nohost", "--port", str(free_port()))
    assert r.returncode == 1 and "invalid --host" in r.stderr
