# SPDX-License-Identifier: MIT
"""A minimal WebSocket client over a raw socket, for poking the controller."""
import base64, json, os, socket, struct


class WS:
    def __init__(self, port, path, timeout=5, extra_headers=""):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n")
        self.s.sendall(req.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.s.recv(4096)
            if not d:
                raise ConnectionError("closed during upgrade: %r" % buf)
            buf += d
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ")[1])

    def send_raw(self, payload, opcode=1, fin=True):
        if isinstance(payload, str):
            payload = payload.encode()
        mask = os.urandom(4)
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", b0, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, 0x80 | 127, n)
        masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        self.s.sendall(hdr + mask + masked)

    def send(self, obj):
        self.send_raw(json.dumps(obj))

    def _need(self, n):
        while len(self.buf) < n:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed")
            self.buf += d

    def recv_frame(self):
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._need(4); n = struct.unpack("!H", self.buf[2:4])[0]; off = 4
        elif n == 127:
            self._need(10); n = struct.unpack("!Q", self.buf[2:10])[0]; off = 10
        self._need(off + n)
        data = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return b0 & 0x0F, data

    def recv(self):
        while True:
            op, data = self.recv_frame()
            if op == 1:
                return json.loads(data)
            if op == 8:
                raise ConnectionError("close frame %r" % data)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def handshake(ws, name):
    ws.send({"version": {"version": "0.5.5", "git_hash": "abcd1234"}, "name": name})
    return ws.recv()
