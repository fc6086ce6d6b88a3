"""sks-issuer under test (test_skip_issuer.py, scripts/bench.sh): the issuing CA's key in an
sks store behind sksd (the issuer reaches it as `sks:name=factory-ca` through the provider),
sks-issuer spawned by spawn-fcgi on a Unix socket, Debian's nginx in front (TLS on one port,
plain HTTP on another for the wire-tampering proxies), recovery certificates made by the
openssl CLI (one RSA: OAEP, one EC: ECDH).
"""

import os
import shutil
import signal
import socket
import ssl
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

import provtools as pt
import skiptools as st

ISSUER = st.BUILD / "tools" / "sks-issuer" / "sks-issuer"
SKSD = st.BUILD / "tools" / "sksd" / "sksd"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SPAWN_FCGI = shutil.which("spawn-fcgi") or "/usr/bin/spawn-fcgi"

# The http block after the common part (provtools.nginx_conf).
NGINX_HTTP = """\
    access_log {dir}/access.log;
    client_max_body_size 64k;
    server {{
        listen 127.0.0.1:{tls} ssl;
        listen 127.0.0.1:{plain};
        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        ssl_client_certificate {client_ca};
        ssl_verify_client optional;
        ssl_protocols TLSv1.2 TLSv1.3;
        location /.well-known/est/ {{
            fastcgi_pass unix:{socket};
            fastcgi_read_timeout 300s;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param DOCUMENT_URI $document_uri;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param SSL_CLIENT_VERIFY $ssl_client_verify;
            fastcgi_param SSL_CLIENT_CERT $ssl_client_escaped_cert;
        }}
    }}
"""


def openssl(*args, cwd=None):
    return st.run(["openssl", *args], cwd=cwd)


def self_signed(directory, name, keyalg, cn, ext=()):
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    openssl("req", "-x509", "-newkey", *keyalg, "-nodes", "-keyout", key, "-out", cert, "-days", "30",
            "-subj", f"/CN={cn}", *ext)
    return key, cert


class Service:
    def __init__(self, base, profile, *, children=2, rate_limit=100000, auth="token", extra=""):
        pt.require_build()
        for prog in (ISSUER, NGINX, SPAWN_FCGI):
            if not Path(prog).exists():
                pytest.fail(f"{prog} is missing (scripts/install-deps.sh; build sks-issuer)", pytrace=False)
        self.dir = Path(base)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root, self.issuing, self.trust = st.make_pki(self.dir)
        # The issuing CA's key goes into a store served by sksd; its file is removed.
        ca_dir = self.dir / "ca"
        ca_dir.mkdir()
        self.ca_store = st.SkipStore(ca_dir, "ca.db")
        from cryptography.hazmat.primitives import serialization
        ca_key = ca_dir / "ca.key"
        ca_key.write_bytes(self.issuing.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        self.ca_cert = ca_dir / "ca.pem"
        self.ca_cert.write_bytes(self.issuing.pem + self.root.pem)
        self.ca_store.sks("import", "--name", "factory-ca", "--key", ca_key, "--cert", self.ca_cert)
        ca_key.unlink()
        self.sksd_socket = self.dir / "sksd.sock"
        self.sksd = pt.Daemon([SKSD, "--store", self.ca_store.db, "--socket", self.sksd_socket],
                              env=st.plain_env(), log=self.dir / "sksd.log")
        for _ in range(200):
            if self.sksd_socket.exists():
                break
            time.sleep(0.05)
        # Recovery certificates: RSA (CMS key transport with OAEP) and EC (CMS key agreement).
        rec = self.dir / "recovery"
        rec.mkdir()
        self.rsa_recovery_key, self.rsa_recovery = self_signed(rec, "rsa", ["rsa:2048"], "recovery officer RSA")
        self.ec_recovery_key, self.ec_recovery = self_signed(rec, "ec", ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
                                                             "recovery officer EC")
        # TLS: the server's certificate, and a CA for client certificates.
        tls = self.dir / "tls"
        tls.mkdir()
        self.server_key, self.server_cert = self_signed(
            tls, "server", ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "127.0.0.1",
            ["-addext", "subjectAltName=IP:127.0.0.1"])
        self.client_ca_key, self.client_ca = self_signed(tls, "client-ca", ["ec", "-pkeyopt",
                                                                            "ec_paramgen_curve:P-256"], "client CA")
        self.db = self.dir / "issuer.db"
        self.archive = self.dir / "archive.db"
        self.log = self.dir / "issuer.log"
        self.config = self.dir / "issuer.conf"
        self.config.write_text(
            f"ca-key = sks:name=factory-ca\nca-cert = {self.ca_cert}\ndatabase = {self.db}\n"
            f"archive = {self.archive}\nlog = {self.log}\nrate-limit = {rate_limit}\nauth = {auth}\n{extra}\n"
            + profile.format(rsa=self.rsa_recovery, ec=self.ec_recovery))
        self.socket = self.dir / "issuer.sock"
        self.pidfile = self.dir / "issuer.pids"
        st.run([SPAWN_FCGI, "-s", self.socket, "-F", str(children), "-P", self.pidfile, "--", ISSUER, "--config",
                self.config], env=self.env())
        self.nginx_dir = self.dir / "nginx"
        self.nginx_dir.mkdir()
        self.port, self.plain_port = pt.free_port(), pt.free_port()
        while self.plain_port == self.port:
            self.plain_port = pt.free_port()
        conf = self.nginx_dir / "nginx.conf"
        http = NGINX_HTTP.format(dir=self.nginx_dir, tls=self.port, plain=self.plain_port,
                                 server_cert=self.server_cert, server_key=self.server_key,
                                 client_ca=self.client_ca, socket=self.socket)
        conf.write_text(pt.nginx_conf(self.nginx_dir, http, worker_connections=256))
        self.nginx = pt.Daemon([NGINX, "-p", self.nginx_dir, "-c", conf, "-e", self.nginx_dir / "error.log"],
                               env=st.plain_env(), log=self.nginx_dir / "nginx.out")
        if not (pt.wait_port(self.port, self.nginx.proc) and pt.wait_port(self.plain_port, self.nginx.proc)):
            self.stop()
            pytest.fail(f"nginx did not start: {self.nginx.output()}", pytrace=False)
        self.url = f"https://127.0.0.1:{self.port}"
        self.plain_url = f"http://127.0.0.1:{self.plain_port}"

    def env(self):
        env = st.plain_env()
        env["SKS_DEVICE"] = f"unix:{self.sksd_socket}"
        env["OPENSSL_MODULES"] = str(st.BUILD)
        return env

    def add_token(self, device, profile="device"):
        res = st.run([ISSUER, "--config", self.config, "add-token", "--profile", profile, "--device", device])
        return res.stdout.decode().strip()

    def stop(self):
        self.nginx.stop()
        if self.pidfile.exists():
            for pid in self.pidfile.read_text().split():
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
        self.sksd.stop()

    # -- reading the service's state ----------------------------------------------------------

    def enrolments(self):
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT who, profile, device, factory, package, issued, confirmed FROM enrolments"
                               " ORDER BY who").fetchall()
        finally:
            con.close()

    def archived(self):
        if not self.archive.exists():
            return []
        con = sqlite3.connect(f"file:{self.archive}?mode=ro", uri=True)
        try:
            return con.execute("SELECT serial, device, profile, certificate, envelope FROM archived_keys"
                               " ORDER BY serial").fetchall()
        finally:
            con.close()

    def log_text(self):
        return self.log.read_text() if self.log.exists() else ""

    def files_to_scan(self):
        out = [self.log, self.nginx_dir / "access.log", self.nginx_dir / "error.log", self.dir / "sksd.log"]
        for p in (self.db, self.archive):
            out += [p, Path(str(p) + "-journal"), Path(str(p) + "-wal")]
        return [p for p in out if p.exists()]


def enroll_args(service, store, token, *, url=None, trust=None):
    return [st.SKS, "--store", store.db, "skip", "enroll", url or service.url, "--token", token,
            "--trust", trust or service.trust, "--tls-ca", service.server_cert]


class WireProxy:
    """A TLS-terminating proxy (the server's own certificate: a compromised front end) in
    front of nginx's plain HTTP port that spoils answers of enrolments: mode "flip" changes
    one base64 character of the package, "cut" sends half of it and closes the connection.
    Other answers (confirmations) pass unchanged. Its URL is `url` (https://)."""

    def __init__(self, service, mode):
        self.upstream, self.mode = service.plain_port, mode
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(service.server_cert, service.server_key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.spoiled = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(client,), daemon=True).start()

    @staticmethod
    def _read_message(conn, first=b""):
        data = first
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lower = head.lower()
        if b"content-length:" in lower:
            n = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            while len(body) < n:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
        elif b"transfer-encoding: chunked" in lower:
            while not body.endswith(b"0\r\n\r\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
        return head + b"\r\n\r\n" + body

    def _one(self, raw):
        try:
            client = self.tls.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        with client, socket.create_connection(("127.0.0.1", self.upstream)) as up:
            request = self._read_message(client)
            request = request.replace(b"Connection: keep-alive", b"Connection: close")
            up.sendall(request)
            answer = self._read_message(up)
            head, _, body = answer.partition(b"\r\n\r\n")
            if b"simpleenroll" in request.split(b"\r\n")[0] and b" 200 " in head.split(b"\r\n")[0]:
                self.spoiled += 1
                if self.mode == "flip":
                    # A base64 line of the package (64 characters) in the middle, never a
                    # chunk-size line of the HTTP framing.
                    lines = body.split(b"\r\n")
                    k = next(k for k in range(len(lines) // 2, len(lines)) if len(lines[k]) == 64)
                    line = lines[k]
                    lines[k] = line[:10] + (b"B" if line[10:11] == b"A" else b"A") + line[11:]
                    body = b"\r\n".join(lines)
                else:
                    client.sendall(head + b"\r\n\r\n" + body[:len(body) // 2])
                    return
            client.sendall(head + b"\r\n\r\n" + body)

    def close(self):
        self.sock.close()


class Impostor:
    """A server that is not the issuer: it records what a client sends it (up to the end of
    the HTTP head) and hangs up. With `tls=(cert, key)` it speaks TLS first."""

    def __init__(self, tls=None):
        self.tls = None
        if tls is not None:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(*tls)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                conn.settimeout(10)
                while b"\r\n\r\n" not in self.received:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    self.received += chunk
            except (ssl.SSLError, OSError):
                pass
            finally:
                conn.close()

    def close(self):
        self.sock.close()


def process_memory(pid):
    """The writable memory of a live process (heap, stacks, data), as one bytes object."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "w" not in fields[1]:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except (OSError, ValueError):
                pass
    return b"".join(chunks)
