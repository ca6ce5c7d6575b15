# SPDX-License-Identifier: MIT
"""Proxies that obtain their certificate themselves (spec §16.5, §17, §19).

A real ACME server (pebble) validates DNS-01 challenges against our own
`plane dns`, which answers from the controller; the proxies take the
cluster's certificate lease through the controller, publish the TXT value
there, and serve what they were issued. Checked with curl against pebble's
root."""
import json
import os
import signal
import socket
import ssl
import subprocess

import pytest
import requests

from conftest import ECHO, PLANE, wait_for
from plane_cluster import Controller, Drone, free_port
from test_dns import Dns

CLUSTER = "plane.test"


class Pebble:
    def __init__(self, procs, tmp_path, dns_port, eab=None):
        self.dir = tmp_path / "pebble"
        self.dir.mkdir(exist_ok=True)
        self.tls_cert, key = str(self.dir / "cert.pem"), str(self.dir / "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out",
                        self.tls_cert, "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
        self.port, self.mgmt = free_port(), free_port()
        cfg = {"listenAddress": f"127.0.0.1:{self.port}", "managementListenAddress": f"127.0.0.1:{self.mgmt}",
               "certificate": self.tls_cert, "privateKey": key, "httpPort": free_port(), "tlsPort": free_port(),
               "ocspResponderURL": "", "externalAccountBindingRequired": bool(eab)}
        if eab:
            cfg["externalAccountMACKeys"] = eab
        conf = str(self.dir / "config.json")
        with open(conf, "w") as f:
            json.dump({"pebble": cfg}, f)
        self.log = str(self.dir / "pebble.log")
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1")
        self.proc = procs.start(["pebble", "-config", conf, "-dnsserver", f"127.0.0.1:{dns_port}"],
                                log=self.log, env=env, cwd=str(self.dir))
        self.directory = f"https://127.0.0.1:{self.port}/dir"

        def up():
            assert self.proc.poll() is None, open(self.log).read()
            try:
                return requests.get(self.directory, verify=self.tls_cert, timeout=2).status_code == 200
            except requests.RequestException:
                return False
        wait_for(up, what="pebble")
        # The root of the certificates it issues.
        self.root = str(self.dir / "root.pem")
        with open(self.root, "w") as f:
            f.write(requests.get(f"https://127.0.0.1:{self.mgmt}/roots/0", verify=self.tls_cert, timeout=5).text)

    def issued(self):
        with open(self.log) as f:
            return f.read().count("Issued certificate serial")


class AcmeProxy:
    def __init__(self, procs, tmp_path, ctrl, pebble, name, cert_path, *extra):
        self.https, self.http = free_port(), free_port()
        self.log = str(tmp_path / f"{name}.log")
        self.proc = procs.start([PLANE, "proxy", "--controller-url", ctrl.url + "/", "--cluster", CLUSTER,
                                 "--name", name, "--host", "127.0.0.1", "--workers", "2",
                                 "--https-port", str(self.https), "--http-port", str(self.http),
                                 "--cert-path", cert_path, "--acme-endpoint", pebble.directory,
                                 "--acme-ca-cert", pebble.tls_cert, "--acme-email", "ops@plane.test",
                                 "--acme-dns-wait", "0", *extra], log=self.log)

    def logs(self):
        with open(self.log) as f:
            return f.read()

    def peer_cert(self, host=CLUSTER):
        """The certificate a new TLS connection is served (DER), or None while nothing listens."""
        assert self.proc.poll() is None, self.logs()
        ctx = ssl.create_default_context(cafile=None)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection(("127.0.0.1", self.https), timeout=5) as s:
                with ctx.wrap_socket(s, server_hostname=host) as t:
                    return t.getpeercert(binary_form=True)
        except OSError:
            return None

    def curl(self, path, root, host=CLUSTER):
        # Host without the port: the proxy matches it against the cluster (§16.1 step 5).
        r = subprocess.run(["curl", "-sS", "--cacert", root, "--resolve", f"{host}:{self.https}:127.0.0.1",
                            "-H", f"Host: {host}",
                            "-o", "/dev/null", "-w", "%{http_code}", f"https://{host}:{self.https}{path}"],
                           capture_output=True, text=True, timeout=30)
        return r.stdout, r.stderr


class KeptConnection:
    """One TLS connection to a proxy, verified against root, for several requests."""

    def __init__(self, port, root):
        ctx = ssl.create_default_context(cafile=root)
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                    server_hostname=CLUSTER)
        self.cert = self.sock.getpeercert(binary_form=True)

    def ready(self):
        self.sock.sendall(f"GET /ready HTTP/1.1\r\nHost: {CLUSTER}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed"
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
        while len(body) < length:
            body += self.sock.recv(4096)
        return int(head.split(b" ")[1])

    def close(self):
        self.sock.close()


@pytest.fixture
def acme_cluster(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    dns = Dns(procs, tmp_path, ctrl.url + "/").start()
    dns.wait_linked()
    pebble = Pebble(procs, tmp_path, dns.port)
    return ctrl, dns, pebble


def test_two_proxies_one_order_and_a_renewal_that_keeps_connections(procs, tmp_path, acme_cluster):
    ctrl, dns, pebble = acme_cluster
    Drone(procs, tmp_path, ctrl, "dr-acme", runtime="process", cluster=CLUSTER).start()
    cert_path = str(tmp_path / "cert.json")
    a = AcmeProxy(procs, tmp_path, ctrl, pebble, "px-a", cert_path)
    b = AcmeProxy(procs, tmp_path, ctrl, pebble, "px-b", cert_path)

    # Both serve HTTPS with one issued certificate: one order, the lease held.
    wait_for(lambda: a.peer_cert() and b.peer_cert(), timeout=60, what="both proxies serving HTTPS")
    wait_for(lambda: a.peer_cert() == b.peer_cert(), timeout=30, what="the same certificate on both")
    assert pebble.issued() == 1
    for p in (a, b):
        assert p.curl("/ready", pebble.root) == ("200", "")
        assert p.curl("/ready", pebble.root, host="any." + CLUSTER) == ("200", "")  # *.plane.test
    first = a.peer_cert()

    # The certificate file (§16.5) and the account key: written 0600, Plane's format.
    for path in (cert_path, cert_path + ".account.pem"):
        assert os.stat(path).st_mode & 0o777 == 0o600
    with open(cert_path) as f:
        saved = json.load(f)
    assert saved["cert"].startswith("-----BEGIN CERTIFICATE-----")
    assert saved["cert"].count("BEGIN CERTIFICATE") == 2           # leaf and intermediate
    assert saved["key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]   # no temporary files left

    # A backend reached through either proxy over HTTPS.
    r = ctrl.connect("acme-key", executable={"command": [ECHO]})
    assert r.status_code == 200, r.text
    body = r.json()
    ctrl.wait_status(body["backend_id"], "ready")
    assert body["url"].startswith(f"https://{CLUSTER}/")
    path = body["url"][len(f"https://{CLUSTER}"):]
    for p in (a, b):
        assert p.curl(path, pebble.root) == ("200", "")

    # Forced renewal (SIGUSR1): a new certificate on A, then on B through the
    # file, while a connection opened before keeps working.
    kept = KeptConnection(a.https, pebble.root)
    assert kept.ready() == 200
    a.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: a.peer_cert() not in (None, first), timeout=60, what="A serving the renewed certificate")
    renewed = a.peer_cert()
    wait_for(lambda: b.peer_cert() == renewed, timeout=30, what="B picking up the renewed certificate")
    assert kept.ready() == 200
    assert kept.cert == first
    kept.close()
    assert pebble.issued() == 2
    assert a.curl("/ready", pebble.root) == ("200", "")
    # Two orders in all: whichever proxy won the first lease, and A's renewal.
    assert (a.logs() + b.logs()).count("ordering one for plane.test") == 2
    assert "certificate for plane.test from ACME is served now" in a.logs()


def test_external_account_binding(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    dns = Dns(procs, tmp_path, ctrl.url + "/").start()
    dns.wait_linked()
    key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
    pebble = Pebble(procs, tmp_path, dns.port, eab={"kid-1": key})
    # Without the binding the account is refused, and the proxy keeps going.
    bad = AcmeProxy(procs, tmp_path, ctrl, pebble, "px-noeab", str(tmp_path / "noeab.json"))
    wait_for(lambda: "next attempt in 30 s" in bad.logs(), timeout=30, what="a failed attempt")
    assert "externalAccountRequired" in bad.logs() or "External Account" in bad.logs()
    assert bad.peer_cert() is None and bad.proc.poll() is None
    # With it (Plane's flag pair, or our KID:KEY form), a certificate.
    good = AcmeProxy(procs, tmp_path, ctrl, pebble, "px-eab", str(tmp_path / "eab.json"),
                     "--acme-eab-keypair", f"kid-1:{key}")
    wait_for(lambda: good.peer_cert(), timeout=60, what="HTTPS with an EAB account")
    assert good.curl("/ready", pebble.root) == ("200", "")


def test_failures_are_retried_and_shutdown_while_waiting(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    nowhere = f"https://127.0.0.1:{free_port()}/dir"
    p = procs.start([PLANE, "proxy", "--controller-url", ctrl.url + "/", "--cluster", CLUSTER, "--name", "px-fail",
                     "--host", "127.0.0.1", "--https-port", str(free_port()), "--http-port", str(free_port()),
                     "--acme-endpoint", nowhere, "--acme-dns-wait", "0"], log=str(tmp_path / "fail.log"))
    wait_for(lambda: "next attempt in 30 s" in open(tmp_path / "fail.log").read(), timeout=30,
             what="a logged failure")
    log = open(tmp_path / "fail.log").read()
    assert "order for plane.test failed" in log and "waiting for a certificate" in log
    assert p.poll() is None
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0


def test_options():
    def run(*args):
        return subprocess.run([PLANE, "proxy", "--controller-url", "http://127.0.0.1:1/", "--cluster", CLUSTER,
                               *args], capture_output=True, text=True, timeout=10)
    r = run("--https-port", str(free_port()))
    assert r.returncode == 1 and "HTTPS needs --cert-path or --acme-endpoint" in r.stderr
    r = run("--acme-email", "a@b.c")
    assert r.returncode == 2 and "need --acme-endpoint" in r.stderr
    r = run("--acme-endpoint", "https://x/dir", "--acme-eab-keypair", "nocolon")
    assert r.returncode == 2 and "KID:HMAC_KEY" in r.stderr
    r = run("--acme-endpoint", "https://x/dir", "--acme-eab-kid", "k", "--acme-eab-hmac-key", "not*base64")
    assert r.returncode == 2 and "base64url" in r.stderr
    r = run("--acme-endpoint", "ftp://x/dir")
    assert r.returncode == 2 and "invalid --acme-endpoint" in r.stderr
    r = run("--acme-endpoint", "https://x/dir", "--acme-dns-wait", "-1")
    assert r.returncode == 2 and "invalid --acme-dns-wait" in r.stderr


def self_signed(tmp_path, name):
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", f"/CN={CLUSTER}", "-addext", f"subjectAltName=DNS:{CLUSTER}"],
                   check=True, capture_output=True, timeout=60)
    return {"cert": cert.read_text(), "key": key.read_text()}, str(cert)


def test_a_replaced_certificate_file_is_served_without_acme(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    path = tmp_path / "cert.json"
    one, one_ca = self_signed(tmp_path, "one")
    path.write_text(json.dumps(one))
    https = free_port()
    log = str(tmp_path / "px-file.log")
    p = procs.start([PLANE, "proxy", "--controller-url", ctrl.url + "/", "--cluster", CLUSTER, "--name", "px-file",
                     "--host", "127.0.0.1", "--https-port", str(https), "--http-port", str(free_port()),
                     "--cert-path", str(path)], log=log)
    wait_for(lambda: "HTTPS port" in open(log).read(), what="listening")
    kept = KeptConnection(https, one_ca)
    assert kept.ready() == 200
    # Replaced the way an operator's tool (or another proxy) does: a new file renamed over it.
    two, two_ca = self_signed(tmp_path, "two")
    (tmp_path / "cert.json.new").write_text(json.dumps(two))
    os.rename(tmp_path / "cert.json.new", path)

    def serves_two():
        try:
            c = KeptConnection(https, two_ca)
            c.close()
            return True
        except (ssl.SSLError, OSError):
            return False
    wait_for(serves_two, timeout=20, what="the new certificate served")
    assert kept.ready() == 200     # the connection made with the old one goes on
    kept.close()
    # A broken file is not taken: the last good certificate stays.
    path.write_text("{")
    p.send_signal(signal.SIGUSR1)
    wait_for(lambda: "cannot load certificate file" in open(log).read(), timeout=20, what="the bad file noticed")
    assert serves_two() and p.poll() is None
