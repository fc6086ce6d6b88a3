"""The importer must not trust the device's count of key handles (issue 9): `sks skip import`
and the provider's SKIP decoder index the package's containers with the handles skipImport
returns, so a device (or a man in the middle of the sksd socket) naming more keys than the
package has containers made the decoder read past the containers. A proxy between the client
and a real device rewrites skipImport's reply to name one key more, or one fewer; both the
tool and the provider refuse such an answer.
"""

import os
import socket
import struct
import threading

import pytest

import sksissuer
import skipissuer as si
import skiptools as st


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return st.make_pki(tmp_path_factory.mktemp("pki"))


class LyingDevice:
    """A unix socket speaking the sksd framing, forwarding every call to a real device
    (`sks serve --stdio`) and changing the key count of a successful skipImport by delta."""

    def __init__(self, store, path, delta):
        self.device = store.device()
        self.delta = delta
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _read(self, conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _lie(self, reply):
        count = struct.unpack(">H", reply[1:3])[0]
        handles = [reply[3 + 4 * i:7 + 4 * i] for i in range(count)]
        handles = handles + handles[:1] if self.delta > 0 else handles[:-1]
        return reply[:1] + struct.pack(">H", len(handles)) + b"".join(handles)

    def _serve(self, conn):
        with conn:
            while True:
                hdr = self._read(conn, 4)
                if hdr is None:
                    return
                req = self._read(conn, struct.unpack(">I", hdr)[0])
                if not req:
                    # sksd's shared-memory channel is asked for with an empty frame: this proxy
                    # speaks frames only and closes, so the client reconnects on frames alone
                    return
                with self.lock:
                    reply = self.device.transact(req)
                if req[0] == 201 and reply[0] == sksissuer.OK:
                    reply = self._lie(reply)
                conn.sendall(struct.pack(">I", len(reply)) + reply)

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def close(self):
        self.sock.close()
        self.device.close()


@pytest.fixture
def lying(tmp_path, pki, request):
    store = st.SkipStore(tmp_path)
    req = store.request("secp256r1", pki[2])
    pkg = si.Package.issue(req, pki[1], ["secp256r1", "ed25519"], 256)
    path = store.write("package.der", pkg.der())
    sock = tmp_path / "lying.sock"
    dev = LyingDevice(store, sock, request.param)
    yield store, path, f"unix:{sock}"
    dev.close()


@pytest.mark.parametrize("lying", [1, -1], ids=["one-more", "one-fewer"], indirect=True)
def test_tool_refuses_a_wrong_handle_count(lying, pki):
    store, path, spec = lying
    res = st.run([st.SKS, "--device", spec, "skip", "import", "--trust", pki[2], path], check=False)
    err = res.stderr.decode(errors="replace")
    assert res.returncode != 0, f"a reply naming the wrong number of keys was taken: {res.stdout.decode()}"
    assert "key handles for 2 containers" in err, err


@pytest.mark.parametrize("lying", [1], ids=["one-more"], indirect=True)
def test_provider_refuses_a_wrong_handle_count(lying, pki, tmp_path):
    store, path, spec = lying
    conf = store.openssl_conf(pki[2])
    conf.write_text(conf.read_text().replace(f"sks-store = {store.db}", f"sks-device = {spec}"))
    env = st.plain_env()
    env["OPENSSL_CONF"] = str(conf)
    res = store.sign(str(path), b"message", "secp256r1", env=env, check=False)
    assert not isinstance(res, bytes), "the provider used a package whose import the device answered wrongly"
    assert b"3 key handles for 2 containers" in res.stderr, res.stderr
