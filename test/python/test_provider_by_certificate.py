"""sks:sha256=<certificate fingerprint> in a long-running process: each load finds exactly the
keys whose end-entity certificate has that fingerprint as the store holds them now, while
another process (the sks tool) deletes keys and imports them again under other certificates.
The provider asks the device for the keys with that certificate (findKeysByCertificate,
docs/wire-format.md); nothing it remembers from an earlier load may decide a later one. Run
with the store in the process and through a long-running sksd."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

import provtools as pt

SKSD = pt.BUILD / "tools" / "sksd" / "sksd"

# Loads the URI of every stdin line in ONE process and prints, per load, the
# SubjectPublicKeyInfo (hex) of every private key it yields, comma-separated ("" for none).
LOAD_PER_LINE = r"""
import ctypes, sys
c = ctypes.CDLL("libcrypto.so.3")
c.OSSL_PROVIDER_load.restype = ctypes.c_void_p
c.OSSL_STORE_open.restype = ctypes.c_void_p
c.OSSL_STORE_load.restype = ctypes.c_void_p
c.OSSL_STORE_load.argtypes = [ctypes.c_void_p]
c.OSSL_STORE_eof.argtypes = [ctypes.c_void_p]
c.OSSL_STORE_close.argtypes = [ctypes.c_void_p]
c.OSSL_STORE_INFO_get_type.argtypes = [ctypes.c_void_p]
c.OSSL_STORE_INFO_get0_PKEY.restype = ctypes.c_void_p
c.OSSL_STORE_INFO_get0_PKEY.argtypes = [ctypes.c_void_p]
c.OSSL_STORE_INFO_free.argtypes = [ctypes.c_void_p]
c.i2d_PUBKEY.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
c.ERR_clear_error.argtypes = []
assert c.OSSL_PROVIDER_load(None, b"default") and c.OSSL_PROVIDER_load(None, b"sks")
for line in sys.stdin:
    s = c.OSSL_STORE_open(line.strip().encode(), None, None, None, None)
    keys = []
    while s and not c.OSSL_STORE_eof(s):
        i = c.OSSL_STORE_load(s)
        if i and c.OSSL_STORE_INFO_get_type(i) == 4:  # OSSL_STORE_INFO_PKEY
            buf = ctypes.create_string_buffer(1024)
            p = ctypes.c_char_p(ctypes.addressof(buf))
            n = c.i2d_PUBKEY(ctypes.c_void_p(c.OSSL_STORE_INFO_get0_PKEY(i)), ctypes.byref(p))
            keys.append(buf.raw[:n].hex())
        if i:
            c.OSSL_STORE_INFO_free(i)
        else:
            break
    if s:
        c.OSSL_STORE_close(s)
    c.ERR_clear_error()
    print(",".join(keys), flush=True)
"""


class Loader:
    """One process with the provider loaded, loading a URI whenever asked."""

    def __init__(self, env, log):
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", LOAD_PER_LINE], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log)

    def load(self, uri):
        self.proc.stdin.write(uri.encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the loading process died (exit {self.proc.poll()})"
        return [k for k in line.decode().strip().split(",") if k]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.log.close()


def key_and_certificates(d, label, count):
    """A P-256 key (PEM) and `count` self-signed certificates of it, each different."""
    key = d / f"{label}.key"
    pt.plain_openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    certs = []
    for i in range(count):
        cert = d / f"{label}.{i}.crt"
        pt.plain_openssl("req", "-x509", "-new", "-key", key, "-subj", f"/CN={label} {i}", "-days", "5", "-out", cert)
        certs.append(cert)
    spki = pt.plain_openssl("pkey", "-in", key, "-pubout", "-outform", "DER").stdout.hex()
    return key, certs, spki


def fingerprint(cert):
    der = pt.plain_openssl("x509", "-in", cert, "-outform", "DER").stdout
    return "sks:sha256=" + hashlib.sha256(der).hexdigest()


@pytest.fixture(params=["in-process", "sksd"])
def loader_and_store(request, tmp_path):
    store = pt.Store(tmp_path / "store")
    daemon = None
    env = store.env()
    if request.param == "sksd":
        sock = tmp_path / "sksd.sock"
        daemon = subprocess.Popen([SKSD, "--store", store.path, "--socket", sock],
                                  stderr=open(tmp_path / "sksd.log", "wb"))
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        assert sock.exists(), (tmp_path / "sksd.log").read_text()
        env.pop("SKS_STORE", None)
        env["SKS_DEVICE"] = f"unix:{sock}"
    # With an instrumented provider (scripts/test.sh --sanitize) its runtime must come first.
    if os.environ.get("SKS_SANITIZER_RUNTIME"):
        env["LD_PRELOAD"] = os.environ["SKS_SANITIZER_RUNTIME"]
    loader = Loader(env, tmp_path / "loader.stderr")
    yield loader, store
    loader.close()
    if daemon is not None:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=10)


def test_sha256_sees_certificates_changed_by_another_process(loader_and_store, tmp_path):
    loader, store = loader_and_store
    key, (c0, c1), spki = key_and_certificates(tmp_path, "k", 2)
    other, (o0,), other_spki = key_and_certificates(tmp_path, "other", 1)
    store.sks("import", "--name", "other", "--key", other, "--cert", o0)

    # Not there yet, then imported by another process: found at once.
    assert loader.load(fingerprint(c0)) == []
    store.sks("import", "--name", "k", "--key", key, "--cert", c0)
    assert loader.load(fingerprint(c0)) == [spki]
    assert loader.load(fingerprint(c0)) == [spki]     # again, with everything warm
    assert loader.load(fingerprint(o0)) == [other_spki]

    # Deleted by another process: gone at once.
    store.sks("delete", "--name", "k")
    assert loader.load(fingerprint(c0)) == []

    # The same key back under another certificate: the new fingerprint finds it (a new
    # handle), the old one finds nothing.
    store.sks("import", "--name", "k", "--key", key, "--cert", c1)
    assert loader.load(fingerprint(c0)) == []
    assert loader.load(fingerprint(c1)) == [spki]

    # And back under the first certificate again.
    store.sks("delete", "--name", "k")
    store.sks("import", "--name", "k", "--key", key, "--cert", c0)
    assert loader.load(fingerprint(c1)) == []
    assert loader.load(fingerprint(c0)) == [spki]
    assert loader.load(fingerprint(o0)) == [other_spki]
