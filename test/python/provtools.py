"""Helpers for the provider and engine tests (test_provider_*.py, test_engine_*.py).

Everything runs from the build tree, nothing is installed: the provider is
$SKS_BUILD_DIR/sks.so (OPENSSL_MODULES), the engine $SKS_BUILD_DIR/engines/sks.so
(OPENSSL_ENGINES), keys are made with `sks generate` in a store selected by SKS_STORE.
Every program a test needs is started here and stopped here, in its own process group,
with a timeout on every wait.

Verification is always done by a "plain" OpenSSL: an environment with no OPENSSL_* and no
SKS_* variables and no -provider options, so only the default provider is there.
"""

import configparser
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import sksissuer

BUILD = Path(os.environ.get("SKS_BUILD_DIR", Path(__file__).resolve().parents[2] / "build"))
SKS = BUILD / "tools" / "sks" / "sks"
PROVIDER = BUILD / "sks.so"
ENGINES = BUILD / "engines"
ENGINE = ENGINES / "sks.so"
CNF_DIR = Path(__file__).resolve().parents[2] / "openssl.cnf.d"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
# The provider on the command line: "default" first, as the configuration snippets do.
PROV = ["-provider", "default", "-provider", "sks"]
TIMEOUT = 30

ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"

# Key types `sks generate` makes, as OpenSSL names what it sees.
EC_CURVES = {
    "P-256": "prime256v1",
    "P-384": "secp384r1",
    "P-521": "secp521r1",
    "brainpoolP256r1": "brainpoolP256r1",
    "brainpoolP320r1": "brainpoolP320r1",
    "brainpoolP384r1": "brainpoolP384r1",
    "brainpoolP512r1": "brainpoolP512r1",
}


def require_build():
    missing = [str(p) for p in (SKS, PROVIDER, ENGINE) if not p.is_file()]
    if missing:
        pytest.fail(f"missing build outputs: {', '.join(missing)} (cmake -S . -B build "
                    f"&& cmake --build build -j2, or set SKS_BUILD_DIR)", pytrace=False)


def clean_env(**extra):
    """The caller's environment without any OPENSSL_* or SKS_* setting, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSSL_", "SKS_"))}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else (b or "")


def describe(args, res=None, note=""):
    cmd = " ".join(str(a) for a in args)
    if res is None:
        return f"`{cmd}` {note}"
    return (f"`{cmd}` exited with {res.returncode} {note}\n--- stdout ---\n{_text(res.stdout)[-4000:]}"
            f"\n--- stderr ---\n{_text(res.stderr)[-4000:]}")


def run(args, *, env, input=None, timeout=TIMEOUT, check=True, cwd=None):
    """Runs a program to completion (killed at the timeout). check: fail the test unless
    it exits with 0. Returns the CompletedProcess with bytes stdout/stderr."""
    args = [str(a) for a in args]
    try:
        res = subprocess.run(args, env=env, input=input, capture_output=True, timeout=timeout, cwd=cwd,
                             stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(describe(args, note=f"did not finish within {timeout} s\nstdout: {_text(e.stdout)[-2000:]}"
                             f"\nstderr: {_text(e.stderr)[-2000:]}"), pytrace=False)
    if check and res.returncode != 0:
        pytest.fail(describe(args, res), pytrace=False)
    return res


def run_fails(args, *, env, input=None, timeout=TIMEOUT, cwd=None):
    """Runs a program that must fail; returns its stderr + stdout as text."""
    res = run(args, env=env, input=input, timeout=timeout, check=False, cwd=cwd)
    if res.returncode == 0:
        pytest.fail(describe(args, res, "but it must fail"), pytrace=False)
    return _text(res.stderr) + _text(res.stdout)


def plain_openssl(*args, input=None, check=True, cwd=None):
    """openssl with the default provider only (no sks anywhere in sight)."""
    return run([OPENSSL, *args], env=clean_env(), input=input, check=check, cwd=cwd)


# Deadline for a server to come up or print what is waited for (a limit, not a pause): on a
# loaded 2-core machine a start can take many seconds (a virtual card took 12 s under load 7).
START_WAIT = 60


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=START_WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def nginx_conf(directory, http, *, worker_connections=64, env=(), user_root=None):
    """A complete nginx.conf for a test's own nginx: in the foreground, a master and two workers,
    its pid file, error log (level info) and every temporary directory under `directory`, then
    `http` (the test's log formats and servers, already formatted) inside the http block.
    `env`: variables the workers keep (nginx clears the rest). `user_root`: workers run as root
    (None: when the test runs as root, so that they can read the test's files)."""
    if user_root is None:
        user_root = os.geteuid() == 0
    lines = ["daemon off;", "master_process on;", "worker_processes 2;", "user root;" if user_root else ""]
    lines += [f"env {name};" for name in env]
    lines += [f"pid {directory}/nginx.pid;", f"error_log {directory}/error.log info;",
              f"events {{ worker_connections {worker_connections}; }}", "http {"]
    lines += [f"    {kind}_temp_path {directory}/tmp-{suffix};" for kind, suffix in
              (("client_body", "body"), ("proxy", "proxy"), ("fastcgi", "fastcgi"), ("uwsgi", "uwsgi"),
               ("scgi", "scgi"))]
    return "\n".join(lines) + "\n" + http + "}\n"


# ---------------------------------------------------------------------------------------------
# Background processes
# ---------------------------------------------------------------------------------------------

class Daemon:
    """A background program in its own process group; stdout+stderr go to a log file, stdin
    is a pipe kept open (openssl s_server ends at end of input). stop() ends the group."""

    def __init__(self, args, *, env, log, cwd=None):
        self.args = [str(a) for a in args]
        self.log_path = Path(log)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def output(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, pattern, timeout=START_WAIT, also=None):
        """Waits until the log matches pattern (regex, multiline). also: another Daemon or
        Popen whose exit ends the wait early. Fails the test on timeout or early exit."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if rx.search(out):
                return out
            if self.proc.poll() is not None:
                out = self.output()
                if rx.search(out):
                    return out
                pytest.fail(f"{describe(self.args)} exited with {self.proc.returncode} before printing "
                            f"{pattern!r}:\n{out[-4000:]}", pytrace=False)
            if also is not None and also.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"{describe(self.args)} did not print {pattern!r} within {timeout} s:\n{self.output()[-4000:]}",
                    pytrace=False)

    def poll(self):
        return self.proc.poll()

    def wait(self, timeout=10):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=5):
        if self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            # The leader is gone; its group (e.g. nginx workers) may not be.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------------------------
# A store with keys
# ---------------------------------------------------------------------------------------------

@dataclass
class Key:
    name: str
    algorithm: str
    handle: int
    sha256: str          # colon-separated hex, as `sks list` shows it
    cert: Path           # end-entity certificate (PEM)
    chain: Path          # certificate + issuer CA (PEM)
    pub: Path            # public key (PEM SubjectPublicKeyInfo)
    pin: str = None
    subject_rfc2253: str = ""

    def uri(self, by="name", pin=None, **query):
        """sks: URI of the key, selected by name, handle or sha256 fingerprint."""
        if by == "name":
            u = f"sks:name={self.name}"
        elif by == "handle":
            u = f"sks:handle={self.handle}"
        elif by == "sha256":
            u = f"sks:sha256={self.sha256}"
        else:
            raise ValueError(by)
        q = dict(query)
        if pin is not None:
            q["pin-value"] = pin
        if q:
            u += "?" + "&".join(f"{k}={v}" for k, v in q.items())
        return u

    @property
    def kind(self):
        if self.algorithm.startswith("RSA"):
            return "rsa"
        if self.algorithm == "Ed25519":
            return "ed25519"
        return "ec"


class Store:
    """An sks store in a directory, with keys generated by `sks generate` (certified by the
    local issuer CA, <store>.issuer-ca.pem)."""

    def __init__(self, directory):
        require_build()
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "store.db"
        self.keys = {}
        self.sks("init")

    @property
    def issuer_ca(self):
        return Path(str(self.path) + ".issuer-ca.pem")

    def env(self, **extra):
        """Environment for programs that use the provider/engine from the build tree."""
        return clean_env(SKS_STORE=self.path, OPENSSL_MODULES=BUILD, OPENSSL_ENGINES=ENGINES, **extra)

    def sks(self, *args, check=True):
        return run([SKS, "--store", self.path, *args], env=clean_env(), check=check)

    def openssl(self, *args, input=None, check=True, env_extra=None, cwd=None):
        """openssl with the sks provider loaded (-provider default -provider sks) after the
        command name."""
        args = list(args)
        return run([OPENSSL, args[0], *PROV, *args[1:]], env=self.env(**(env_extra or {})), input=input,
                   check=check, cwd=cwd)

    def openssl_fails(self, *args, input=None, env_extra=None):
        args = list(args)
        return run_fails([OPENSSL, args[0], *PROV, *args[1:]], env=self.env(**(env_extra or {})), input=input)

    def list_json(self):
        return json.loads(self.sks("list", "--json").stdout)

    def entry(self, name):
        for e in self.list_json():
            if e["name"] == name:
                return e
        pytest.fail(f"`sks list --json` has no key named {name}", pytrace=False)

    def protection(self, key):
        """getKeyProtectionInfo of the key, asked through `sks serve --stdio`."""
        dev = sksissuer.Device(str(SKS), str(self.path), stderr_path=self.dir / "device.stderr")
        try:
            return dev.get_key_protection_info(key.handle)
        finally:
            dev.close()

    def generate(self, name, algorithm, *, subject=None, pin=None, endorse=(), pin_retries=None):
        args = ["generate", "--name", name, "--algorithm", algorithm]
        if subject:
            args += ["--subject", subject]
        if pin is not None:
            args += ["--pin", pin]
        if pin_retries is not None:
            args += ["--pin-retries", str(pin_retries)]
        for uri in endorse:
            args += ["--endorse", uri]
        self.sks(*args)
        e = self.entry(name)
        cert = self.dir / f"{name}.pem"
        chain = self.dir / f"{name}.chain.pem"
        pub = self.dir / f"{name}.pub.pem"
        cert.write_bytes(self.sks("cert", "--name", name).stdout)
        chain.write_bytes(self.sks("cert", "--name", name, "--chain").stdout)
        pub.write_bytes(plain_openssl("x509", "-in", cert, "-pubkey", "-noout").stdout)
        dn = _text(plain_openssl("x509", "-in", cert, "-noout", "-subject", "-nameopt", "RFC2253").stdout)
        key = Key(name, algorithm, int(e["handle"]), e["sha256"], cert, chain, pub, pin,
                  dn.strip().removeprefix("subject=").strip())
        self.keys[name] = key
        return key


def make_store(tmp_path_factory, label, specs):
    """A store with keys: specs is a list of (name, algorithm) or (name, algorithm, kwargs)."""
    store = Store(tmp_path_factory.mktemp(label))
    for name, alg, *rest in specs:
        store.generate(name, alg, **(rest[0] if rest else {}))
    return store


# ---------------------------------------------------------------------------------------------
# openssl.cnf from the snippets in openssl.cnf.d/
# ---------------------------------------------------------------------------------------------

def _read_snippet(name):
    cp = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=("#",),
                                   default_section="__top__", strict=False)
    cp.optionxform = str
    text = (CNF_DIR / name).read_text()
    cp.read_string("[__top__]\n" + text)
    return cp


def write_openssl_conf(path, store, *, provider=True, engine=False, pin=None):
    """Writes an OPENSSL_CONF from openssl.cnf.d/sks-provider.cnf and/or sks-engine.cnf,
    with absolute paths for the module, the engine and the store (and `pin =` if given)."""
    sections = {}
    top = {}
    names = (["sks-provider.cnf"] if provider else []) + (["sks-engine.cnf"] if engine else [])
    for name in names:
        cp = _read_snippet(name)
        top.update(cp.defaults())
        for sec in cp.sections():
            own = {k: v for k, v in cp.items(sec, raw=True) if k not in cp.defaults()}
            sections.setdefault(sec, {}).update(own)
    if provider:
        sks = sections["sks_section"]
        assert sks.get("module") == "sks.so", f"sks-provider.cnf: unexpected module line {sks.get('module')!r}"
        sks["module"] = str(PROVIDER)
        sks["sks-store"] = str(store.path)
        if pin is not None:
            sks["pin"] = pin
    if engine:
        eng = sections["sks_engine_section"]
        assert "dynamic_path" not in eng, f"sks-engine.cnf: unexpected dynamic_path {eng.get('dynamic_path')!r}"
        # The installed snippet finds the engine by id in OpenSSL's engines directory; the
        # build's engine is named by path (dynamic_path before engine_id, as OpenSSL wants).
        sections["sks_engine_section"] = {"dynamic_path": str(ENGINE), **eng}
    lines = [f"{k} = {v}" for k, v in top.items()]
    for sec, items in sections.items():
        lines.append(f"\n[{sec}]")
        lines += [f"{k} = {v}" for k, v in items.items()]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


# ---------------------------------------------------------------------------------------------
# TLS with openssl s_server / s_client
# ---------------------------------------------------------------------------------------------

@dataclass
class TlsResult:
    client: str
    server: str
    client_args: list = field(default_factory=list)
    server_args: list = field(default_factory=list)

    def explain(self):
        return (f"server: {' '.join(map(str, self.server_args))}\n{self.server[-3000:]}\n"
                f"client: {' '.join(map(str, self.client_args))}\n{self.client[-3000:]}")


def tls_handshake(tmp, *, server_args, server_env, client_args, client_env, wrap_client=(), wrap_server=(),
                  timeout=START_WAIT, expect_ok=True):
    """One s_server (-naccept 1) and one s_client on 127.0.0.1; returns both outputs after
    the handshake, one line of application data from client to server, and a clean close."""
    tmp = Path(tmp)
    port = free_port()
    srv_cmd = [*wrap_server, OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1", *server_args]
    srv = Daemon(srv_cmd, env=server_env, log=tmp / f"s_server.{port}.log")
    cli = None
    try:
        srv.wait_for(r"^ACCEPT", timeout=timeout)
        cli_cmd = [*wrap_client, OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", *client_args]
        cli = Daemon(cli_cmd, env=client_env, log=tmp / f"s_client.{port}.log")
        if expect_ok:
            srv.wait_for(r"^CIPHER is", timeout=timeout, also=cli)
            cli.wait_for(r"^\s*Verify return code:", timeout=timeout)
            cli.proc.stdin.write(b"ping from the client\n")
            cli.proc.stdin.flush()
            srv.wait_for(r"^ping from the client", timeout=timeout)
        cli.proc.stdin.close()
        if cli.wait(timeout) is None:
            pytest.fail(f"s_client did not end\n{TlsResult(cli.output(), srv.output(), cli_cmd, srv_cmd).explain()}",
                        pytrace=False)
        srv.wait(timeout if expect_ok else 2)
        return TlsResult(cli.output(), srv.output(), cli_cmd, srv_cmd)
    finally:
        if cli is not None:
            cli.stop()
        srv.stop()


def soft_cert(tmp, name, keyalg=("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")):
    """A self-signed certificate with its key in a file, made by the default provider."""
    tmp = Path(tmp)
    key, cert = tmp / f"{name}.key", tmp / f"{name}.crt"
    plain_openssl("req", "-x509", *keyalg, "-nodes", "-keyout", key, "-out", cert, "-subj", f"/CN={name}",
                  "-days", "2")
    return key, cert


# ---------------------------------------------------------------------------------------------
# Counting device operations with gdb
# ---------------------------------------------------------------------------------------------

GDB = shutil.which("gdb")
COUNT_MARK = "SKS_COUNTS"


def gdb_counter(tmp):
    """A command prefix that runs a program under gdb and, when it exits, prints
    "SKS_COUNTS ops=N calls=M": N private-key operations the provider sent to the device
    (sks_op_sign/decrypt/agree), M times it took the device connection for calls of any kind
    (sks_conn_acquire: every client call the provider makes goes through it)."""
    script = Path(tmp) / "count-device-ops.gdb"
    script.write_text("""set pagination off
set confirm off
set breakpoint pending on
set $ops = 0
set $calls = 0
break sks_op_sign
commands
silent
set $ops = $ops + 1
continue
end
break sks_op_decrypt
commands
silent
set $ops = $ops + 1
continue
end
break sks_op_agree
commands
silent
set $ops = $ops + 1
continue
end
break sks_conn_acquire
commands
silent
set $calls = $calls + 1
continue
end
run
printf "MARK ops=%d calls=%d\\n", $ops, $calls
""".replace("MARK", COUNT_MARK))
    return [GDB, "-q", "-batch", "-x", str(script), "--args"]


def gdb_counts(output):
    m = re.search(COUNT_MARK + r" ops=(\d+) calls=(\d+)", output)
    return (int(m.group(1)), int(m.group(2))) if m else None
