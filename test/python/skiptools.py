"""Helpers for the SKIP tests (test_skip_*.py): a store driven through the real `sks` tool,
OpenSSL driven through the real `openssl` CLI with the sks provider from the build tree, and
a plain OpenSSL (default provider only) that checks every signature.

Run with Debian's interpreter: /usr/bin/python3 -m pytest -q test/python/test_skip_*.py
"""

import base64
import os
import subprocess
from pathlib import Path

import pytest

import sksissuer
import skipissuer as si

BUILD = Path(os.environ.get("SKS_BUILD_DIR", "/work/main/build"))
SKS = BUILD / "tools" / "sks" / "sks"
PROVIDER = BUILD / "sks.so"
SKIP_DECODE = BUILD / "test" / "unit" / "skip_decode"
TIMEOUT = 120


def require_build():
    missing = [str(p) for p in (SKS, PROVIDER) if not p.is_file()]
    if missing:
        pytest.fail(f"missing build outputs: {', '.join(missing)} (cd /work/main && cmake -S . -B build && "
                    f"cmake --build build -j2, or set SKS_BUILD_DIR)", pytrace=False)


def plain_env():
    """No OPENSSL_* and no SKS_*: OpenSSL with its default provider only."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENSSL_", "SKS_"))}


def run(args, *, env=None, input=None, check=True, cwd=None):
    res = subprocess.run([str(a) for a in args], capture_output=True, env=env if env is not None else plain_env(),
                         input=input, timeout=TIMEOUT, cwd=cwd)
    if check and res.returncode != 0:
        pytest.fail(f"`{' '.join(map(str, args))}` exited with {res.returncode}:\n"
                    f"{res.stdout.decode(errors='replace')}\n{res.stderr.decode(errors='replace')}", pytrace=False)
    return res


def pem_cert(der):
    b64 = base64.encodebytes(der).decode().replace("\n", "")
    return ("-----BEGIN CERTIFICATE-----\n" + "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
            + "\n-----END CERTIFICATE-----\n").encode()


class SkipStore:
    """One store in a test directory, with the openssl configuration that reaches it."""

    def __init__(self, directory, name="store.db"):
        require_build()
        self.dir = Path(directory)
        self.db = self.dir / name
        self.sks("init")

    # -- files --------------------------------------------------------------------------------

    def write(self, name, data):
        path = self.dir / name
        path.write_bytes(data)
        return path

    def snapshot(self):
        """The store's persistent bytes: the database (and its WAL, had one survived) and
        the master key. (The -shm WAL index is SQLite's transient state, not store content.)"""
        out = {}
        for suffix in ("", "-wal", ".key"):
            p = Path(str(self.db) + suffix)
            if p.exists():
                out[suffix] = p.read_bytes()
        return out

    # -- the sks tool ---------------------------------------------------------------------------

    def sks(self, *args, check=True, env=None):
        return run([SKS, "--store", self.db, *args], check=check, env=env, cwd=self.dir)

    def request(self, curve, trust, subject="CN=skip device, O=sks tests", name="request.pem"):
        """`sks skip request`; the device keeps the anchors in the PEM file `trust`."""
        out = self.dir / name
        if out.exists():
            out.unlink()
        self.sks("skip", "request", "--curve", si.CLI_NAMES[curve], "--subject", subject, "--trust", trust,
                 "--out", out)
        return si.parse_request(out.read_bytes())

    def import_package(self, package_path, trust_path, check=True):
        return self.sks("skip", "import", "--trust", trust_path, package_path, check=check)

    # -- the device, read back ----------------------------------------------------------------

    def device(self):
        return sksissuer.Device(SKS, self.db)

    def key_paths(self):
        """{handle: (friendly name, certificate path)} of every usable key."""
        d = self.device()
        try:
            out = {}
            for h in d.list_keys():
                a = d.get_key_attributes(h)
                out[h] = (a.friendly_name, a.certificate_path)
            return out
        finally:
            d.close()

    def open_skip_sessions(self):
        d = self.device()
        try:
            return [s for s in d.list_sessions(True) if s.issuer_uri == "urn:sks:skip"]
        finally:
            d.close()

    def skip_import_on_wire(self, handle, package_der):
        """skipImport (201) straight on the wire, as any client may send it, bypassing every
        check of `sks skip import`: the key handles, or (status, message) of the refusal."""
        d = self.device()
        try:
            r = d.call(201, sksissuer.uint(handle) + sksissuer.blob(package_der), "skipImport")
            return [r.uint() for _ in range(r.ushort())]
        except sksissuer.SksError as e:
            return (e.status, e.message)
        finally:
            d.close()

    def failed_unwraps(self, handle):
        """The device's count of verified packages that did not unwrap, for a request (None
        once the request is gone), read from the store's SQLite file."""
        import sqlite3
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT failed_unwraps FROM skip_requests WHERE session = ?", (handle,)).fetchone()
            return row[0] if row else None
        finally:
            con.close()

    def keys_in_store(self):
        """(handle, session, id) of every key row, pending or usable."""
        import sqlite3
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT handle, session, id FROM keys ORDER BY handle").fetchall()
        finally:
            con.close()

    def handle_of(self, ee_der):
        for h, (_, path) in self.key_paths().items():
            if path and path[0] == ee_der:
                return h
        return None

    # -- OpenSSL with the provider --------------------------------------------------------------

    def openssl_conf(self, trust=None, name="openssl.cnf"):
        lines = ["openssl_conf = openssl_init", "[openssl_init]", "providers = provider_section",
                 "[provider_section]", "default = default_section", "sks = sks_section",
                 "[default_section]", "activate = 1", "[sks_section]", "activate = 1",
                 f"module = {PROVIDER}", f"sks-store = {self.db}"]
        if trust is not None:
            lines.append(f"skip-trust = {trust}")
        return self.write(name, ("\n".join(lines) + "\n").encode())

    def provider_env(self, trust=None):
        env = plain_env()
        env["OPENSSL_CONF"] = str(self.openssl_conf(trust))
        return env

    def sign(self, key_source, message, kind, env=None, check=True):
        """Signs message with a key OpenSSL loads from key_source (an sks: URI or a file),
        through the provider; returns the signature or the failed process."""
        msg = self.write("message.bin", message)
        sig = self.dir / "signature.bin"
        digest = [] if kind == "ed25519" else ["-digest", "sha256"]
        res = run(["openssl", "pkeyutl", "-sign", "-rawin", *digest, "-inkey", key_source, "-in", msg,
                   "-out", sig], env=env or self.provider_env(), check=check, cwd=self.dir)
        return sig.read_bytes() if res.returncode == 0 else res

    def verify(self, cert_der, message, signature, kind):
        """Verification by plain OpenSSL (default provider only) against the certificate."""
        cert = self.write("verify-cert.pem", pem_cert(cert_der))
        msg = self.write("verify-message.bin", message)
        sig = self.write("verify-signature.bin", signature)
        digest = [] if kind == "ed25519" else ["-digest", "sha256"]
        res = run(["openssl", "pkeyutl", "-verify", "-rawin", *digest, "-certin", "-inkey", cert, "-in", msg,
                   "-sigfile", sig], check=False, cwd=self.dir)
        assert res.returncode == 0 and b"Signature Verified Successfully" in res.stdout, (
            f"signature by the {kind} key does not verify against its certificate:\n"
            f"{res.stdout.decode(errors='replace')}{res.stderr.decode(errors='replace')}")

    def sign_and_verify(self, handle, cert_der, kind):
        message = f"signed by sks key {handle} ({kind}) after SKIP import".encode()
        signature = self.sign(f"sks:handle={handle}", message, kind)
        assert isinstance(signature, bytes), signature
        self.verify(cert_der, message, signature, kind)


def make_pki(directory):
    """A root and an issuing CA under it; the root's PEM is the trust anchor file."""
    root = si.Ca("SKIP test root CA")
    issuing = si.Ca("SKIP test issuing CA", parent=root)
    trust = Path(directory) / "root.pem"
    trust.write_bytes(root.pem)
    return root, issuing, trust
