"""sksd: the store served on a Unix socket, outside the applications that use its keys.

Real programs throughout: sksd, the sks tool, Debian's nginx with unprivileged workers using
the sks engine, curl with the engine, and clients speaking the wire format directly. The store
and its master key stay readable by root only; the workers reach keys through the socket.
"""

import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from multiprocessing import Process, Queue

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sksissuer as s  # noqa: E402

BUILD = os.environ.get("SKS_BUILD_DIR", "/work/main/build")
SKS = os.path.join(BUILD, "tools", "sks", "sks")
SKSD = os.path.join(BUILD, "tools", "sksd", "sksd")
ENGINES = os.path.join(BUILD, "engines")
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


# How long a daemon (sksd, nginx's workers) may take to come up: on a loaded 2-core machine
# far more than the usual tens of milliseconds, and waiting costs nothing when it is quick.
START_WAIT = 15


def free_ports(n):
    """n distinct free ports: each socket stays bound until all are picked (two calls of
    bind to port 0 in a row may give the same port, and nginx then cannot listen on both)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for so in socks:
            so.bind(("127.0.0.1", 0))
        return [so.getsockname()[1] for so in socks]
    finally:
        for so in socks:
            so.close()


def run(cmd, env=None, check=True, timeout=120, **kw):
    res = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout.decode(errors='replace')}\n"
                             f"{res.stderr.decode(errors='replace')}")
    return res


class Daemon:
    """sksd on a store; the socket lives in a directory the unprivileged group can reach."""

    def __init__(self, store, sockdir, extra=()):
        self.store = store
        self.socket = os.path.join(sockdir, "sksd.sock")
        self.log = os.path.join(sockdir, "sksd.log")
        self.args = [SKSD, "--store", store, "--socket", self.socket, "--mode", "0660",
                     "--group", "nogroup", "--allow-gid", "nogroup", "--admin-uid", "0", *extra]
        self.proc = None

    def start(self):
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args, stderr=self.logf)
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if os.path.exists(self.socket):
                return self
            time.sleep(0.05)
        raise AssertionError(f"sksd did not create {self.socket}: {self.log_text()}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        return self.proc.returncode

    def log_text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")


def frame_call(sock_path, request, timeout=30):
    with socket.socket(socket.AF_UNIX) as so:
        so.settimeout(timeout)
        so.connect(sock_path)
        so.sendall(struct.pack(">I", len(request)) + request)
        return read_frame(so)


def read_frame(so):
    hdr = b""
    while len(hdr) < 4:
        chunk = so.recv(4 - len(hdr))
        if not chunk:
            raise ConnectionError("sksd closed the connection")
        hdr += chunk
    (n,) = struct.unpack(">I", hdr)
    data = b""
    while len(data) < n:
        chunk = so.recv(n - len(data))
        if not chunk:
            raise ConnectionError("sksd closed the connection mid-reply")
        data += chunk
    return data


def sign_request(handle, digest):
    alg = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    return (bytes([100]) + s.uint(handle) + s.string(alg) + s.arr(b"") + s.boolean(False) + s.arr(b"")
            + s.arr(digest))


@pytest.fixture(scope="module")
def env():
    """A root-only store with a server key, a client key and a signing key, and sksd on it."""
    base = tempfile.mkdtemp(prefix="sks-sksd-")
    os.chmod(base, 0o755)
    private = os.path.join(base, "private")
    os.mkdir(private, 0o700)
    sockdir = os.path.join(base, "run")
    os.mkdir(sockdir, 0o755)
    store = os.path.join(private, "store.db")
    run([SKS, "--store", store, "init"])
    for name, alg, subject in [("web", "P-256", "/CN=localhost"), ("client", "RSA-2048", "/CN=sksd client"),
                               ("signer", "P-256", "/CN=signer"), ("proxy", "P-384", "/CN=proxy")]:
        run([SKS, "--store", store, "generate", "--name", name, "--algorithm", alg, "--subject", subject])
    handles = {}
    for line in run([SKS, "--store", store, "list"]).stdout.decode().splitlines():
        if line.startswith("key "):
            num, name = line[4:].split(": ", 1)
            handles[name] = int(num)
    pub = {}
    for name in handles:
        pem = run([SKS, "--store", store, "cert", "--name", name]).stdout
        pub[name] = pem
        with open(os.path.join(base, name + ".crt"), "wb") as f:
            f.write(pem)
    ca = run(["openssl", "x509", "-in", store + ".issuer-ca.pem"]).stdout
    with open(os.path.join(base, "ca.pem"), "wb") as f:
        f.write(ca)
    # The keys nginx's workers use belong to their user (nobody); the rest stay root's.
    run([SKSD, "--store", store, "--key-owner", "web=nobody", "--key-owner", "proxy=nobody"])
    daemon = Daemon(store, sockdir).start()
    state = {"base": base, "store": store, "daemon": daemon, "handles": handles, "certs": pub,
             "device": "unix:" + daemon.socket}
    yield state
    state["daemon"].stop()   # the SIGTERM test restarts the daemon: stop the current one
    shutil.rmtree(base, ignore_errors=True)


def provider_env(device):
    e = dict(os.environ)
    e.update({"SKS_DEVICE": device, "OPENSSL_MODULES": BUILD, "OPENSSL_ENGINES": ENGINES})
    e.pop("SKS_STORE", None)
    return e


def test_store_is_root_only_and_socket_is_for_the_group(env):
    st = os.stat(env["store"])
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert stat.S_IMODE(os.stat(env["store"] + ".key").st_mode) == 0o600
    sst = os.stat(env["daemon"].socket)
    assert stat.S_ISSOCK(sst.st_mode) and stat.S_IMODE(sst.st_mode) == 0o660
    assert sst.st_gid == 65534
    # nobody cannot open the store directly ...
    res = run(NOBODY + [SKS, "--store", env["store"], "list"], check=False)
    assert res.returncode != 0
    # ... but lists its keys through sksd (not root's: key owners, README "sksd").
    res = run(NOBODY + [SKS, "--device", env["device"], "list"], env=provider_env(env["device"]))
    assert b"web" in res.stdout and b"proxy" in res.stdout
    assert b"client" not in res.stdout and b"signer" not in res.stdout


def test_provisioning_is_for_administrators_only(env):
    e = provider_env(env["device"])
    e["HOME"] = tempfile.mkdtemp(prefix="sks-nobody-")
    os.chmod(e["HOME"], 0o777)
    res = run(NOBODY + [SKS, "--device", env["device"], "generate", "--name", "intruder", "--algorithm", "P-256"],
              env=e, check=False)
    assert res.returncode != 0
    assert b"restricted to administrators" in res.stderr
    assert "refused method 2 from uid 65534" in env["daemon"].log_text()
    assert b"intruder" not in run([SKS, "--store", env["store"], "list"]).stdout


def test_user_outside_the_allow_list_is_refused(env):
    # 'daemon' (uid 1, gid 1) may reach the socket if it were in the group; make it reachable
    # by permissions alone and check that the allow-list still refuses it.
    os.chmod(env["daemon"].socket, 0o666)
    try:
        res = run(["setpriv", "--reuid=daemon", "--regid=daemon", "--clear-groups", SKS, "--device",
                   env["device"], "list"], env=provider_env(env["device"]), check=False)
    finally:
        os.chmod(env["daemon"].socket, 0o660)
    assert res.returncode != 0
    assert b"not allowed to use the key store" in res.stderr
    assert "refused connection from uid 1" in env["daemon"].log_text()


def _sign_worker(sock_path, handle, count, queue):
    errors = 0
    sigs = []
    try:
        with socket.socket(socket.AF_UNIX) as so:
            so.settimeout(30)
            so.connect(sock_path)
            for i in range(count):
                digest = hashes.Hash(hashes.SHA256())
                digest.update(b"message %d from %d" % (i, os.getpid()))
                d = digest.finalize()
                req = sign_request(handle, d)
                so.sendall(struct.pack(">I", len(req)) + req)
                reply = read_frame(so)
                if reply[0] != 0:
                    errors += 1
                elif i % 50 == 0:
                    sigs.append((d, reply[3:]))
    except Exception as e:  # reported to the parent, which fails the test
        queue.put(("exception", repr(e)))
        return
    queue.put(("done", errors, sigs))


def test_eight_processes_thousand_signatures_each(env):
    handle = env["handles"]["signer"]
    pub = x509.load_pem_x509_certificate(env["certs"]["signer"]).public_key()
    queue = Queue()
    procs = [Process(target=_sign_worker, args=(env["daemon"].socket, handle, 1000, queue)) for _ in range(8)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
    assert all(r[0] == "done" for r in results), results
    assert sum(r[1] for r in results) == 0
    checked = 0
    for _, _, sigs in results:
        for digest, raw in sigs:
            r, sv = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
            pub.verify(utils.encode_dss_signature(r, sv), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            checked += 1
    assert checked == 8 * 20


def test_client_killed_mid_request_leaves_sksd_serving(env):
    handle = env["handles"]["signer"]
    req = sign_request(handle, b"\x01" * 32)
    # A client that announces a frame, sends half of it and dies.
    code = (
        "import socket,struct,os,time\n"
        f"so=socket.socket(socket.AF_UNIX); so.connect({env['daemon'].socket!r})\n"
        f"r={req!r}\n"
        "so.sendall(struct.pack('>I',len(r))+r[:len(r)//2]); time.sleep(30)\n"
    )
    half = subprocess.Popen([sys.executable, "-c", code])
    # A client killed while sksd works on its slow request (RSA-4096 key generation).
    slow = subprocess.Popen([SKS, "--device", env["device"], "generate", "--name", "slow", "--algorithm",
                             "RSA-4096"], env=provider_env(env["device"]), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    half.kill()
    slow.kill()
    half.wait()
    slow.wait()
    for _ in range(20):
        reply = frame_call(env["daemon"].socket, req)
        assert reply[0] == 0
    assert env["daemon"].proc.poll() is None
    # Whatever the killed generate got done is whole: every enumerated key has its certificate.
    out = run([SKS, "--device", env["device"], "list", "--json"]).stdout.decode()
    assert '"name": "slow"' not in out or "RSA-4096" in out


def _nginx_conf(base, port, upstream_port, device):
    return f"""
daemon off;
master_process on;
worker_processes 2;
error_log {base}/nginx-error.log info;
pid {base}/nginx.pid;
env SKS_DEVICE={device};
env OPENSSL_MODULES;
events {{ worker_connections 64; }}
http {{
  access_log {base}/nginx-access.log;
  client_body_temp_path {base}/tmp; proxy_temp_path {base}/tmp; fastcgi_temp_path {base}/tmp;
  uwsgi_temp_path {base}/tmp; scgi_temp_path {base}/tmp;
  log_format upstream '$ssl_client_s_dn';
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate {base}/web.crt;
    ssl_certificate_key engine:sks:sks:name=web;
    ssl_client_certificate {base}/ca.pem;
    ssl_verify_client on;
    location / {{ return 200 "client $ssl_client_s_dn worker $pid\\n"; }}
    location /proxy {{
      proxy_pass https://127.0.0.1:{upstream_port}/;
      proxy_ssl_certificate {base}/proxy.crt;
      proxy_ssl_certificate_key engine:sks:sks:name=proxy;
    }}
  }}
  server {{
    listen 127.0.0.1:{upstream_port} ssl;
    ssl_certificate {base}/web.crt;
    ssl_certificate_key engine:sks:sks:name=web;
    ssl_client_certificate {base}/ca.pem;
    ssl_verify_client on;
    access_log {base}/upstream.log upstream;
    location / {{ return 200 "upstream saw $ssl_client_s_dn\\n"; }}
  }}
}}
"""


def _engine_cnf(base):
    path = os.path.join(base, "engine.cnf")
    with open(path, "w") as f:
        f.write("openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n"
                "[engine_section]\nsks = sks_section\n[sks_section]\nengine_id = sks\n"
                f"dynamic_path = {ENGINES}/sks.so\ninit = 1\n")
    return path


def _workers(master):
    """The worker processes of our nginx (not of any other nginx on the machine)."""
    out = subprocess.run(["ps", "-o", "pid=,user=,args=", "--ppid", str(master)], capture_output=True).stdout.decode()
    return [(int(l.split()[0]), l.split()[1]) for l in out.splitlines() if "worker process" in l]


def _curl(base, port, path="/", cert_from_engine=True, device=None):
    args = ["curl", "-sS", "--max-time", "20", "--cacert", os.path.join(base, "ca.pem"),
            "--resolve", f"localhost:{port}:127.0.0.1", "--engine", "sks", "--key-type", "ENG",
            "--key", "sks:name=client"]
    if cert_from_engine:
        args += ["--cert-type", "ENG", "--cert", "sks\\:name=client"]
    else:
        args += ["--cert", os.path.join(base, "client.crt")]
    e = provider_env(device)
    e["OPENSSL_CONF"] = _engine_cnf(base)
    return run(args + [f"https://localhost:{port}{path}"], env=e, check=False)


@pytest.fixture(scope="module")
def nginx(env):
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (scripts/install-deps.sh installs it)")
    base = env["base"]
    os.makedirs(os.path.join(base, "tmp"), exist_ok=True)
    port, upstream = free_ports(2)
    conf = os.path.join(base, "nginx.conf")
    with open(conf, "w") as f:
        f.write(_nginx_conf(base, port, upstream, env["device"]))
    e = provider_env(env["device"])
    e["OPENSSL_CONF"] = _engine_cnf(base)
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", base], env=e, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield {"port": port, "upstream": upstream, "proc": proc}
    proc.send_signal(signal.SIGQUIT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_nginx_unprivileged_workers_serve_with_keys_in_sksd(env, nginx):
    workers = _workers(nginx["proc"].pid)
    assert workers and all(user == "nobody" for _, user in workers), workers
    res = _curl(env["base"], nginx["port"], cert_from_engine=False, device=env["device"])
    assert res.returncode == 0, res.stderr
    assert b"client CN=sksd client" in res.stdout
    res = _curl(env["base"], nginx["port"], cert_from_engine=True, device=env["device"])
    assert res.returncode == 0, res.stderr
    assert b"client CN=sksd client" in res.stdout
    # Without a client certificate nginx refuses the request.
    plain = run(["curl", "-sS", "--max-time", "10", "--cacert", os.path.join(env["base"], "ca.pem"),
                 "--resolve", f"localhost:{nginx['port']}:127.0.0.1", f"https://localhost:{nginx['port']}/"],
                check=False)
    assert b"No required SSL certificate was sent" in plain.stdout


def test_nginx_worker_killed_and_respawned_still_serves(env, nginx):
    before = _workers(nginx["proc"].pid)
    for pid, _ in before:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + START_WAIT
    while True:
        after = _workers(nginx["proc"].pid)
        if len(after) == len(before) and not set(p for p, _ in after) & set(p for p, _ in before):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert after and not set(p for p, _ in after) & set(p for p, _ in before)
    assert all(user == "nobody" for _, user in after)
    for _ in range(4):
        res = _curl(env["base"], nginx["port"], device=env["device"])
        assert res.returncode == 0, res.stderr
        assert b"client CN=sksd client" in res.stdout


def test_nginx_proxy_authenticates_to_upstream_with_key_in_sksd(env, nginx):
    res = _curl(env["base"], nginx["port"], path="/proxy", device=env["device"])
    assert res.returncode == 0, res.stderr
    assert b"upstream saw CN=proxy" in res.stdout
    # nginx writes the access log after the response: give it a moment.
    log = os.path.join(env["base"], "upstream.log")
    for _ in range(50):
        if os.path.exists(log) and "CN=proxy" in open(log).read():
            break
        time.sleep(0.1)
    with open(log) as f:
        assert "CN=proxy" in f.read()


def test_sigterm_stops_cleanly_and_keeps_committed_changes(env):
    device = env["device"]
    run([SKS, "--device", device, "generate", "--name", "committed", "--algorithm", "P-256"],
        env=provider_env(device))
    daemon = env["daemon"]
    assert daemon.stop(signal.SIGTERM) == 0
    assert "stopped" in daemon.log_text()
    assert not os.path.exists(daemon.socket)
    env["daemon"] = Daemon(env["store"], os.path.dirname(daemon.socket)).start()
    out = run([SKS, "--device", device, "list", "--json"], env=provider_env(device)).stdout
    assert b'"name": "committed"' in out


def test_socket_appears_complete_and_no_path_is_chmodded(env, tmp_path):
    """sksd (root) sets the socket's mode and group without chmod/chown on a path (a symlink
    swapped in after bind() would have given another user any file), and the socket shows up
    at its path only when it has its final mode and group and listens: the first connection
    to see it is served."""
    sockdir = tmp_path / "run"
    sockdir.mkdir()
    os.chmod(tmp_path, 0o755)
    trace = tmp_path / "strace.out"
    sock = sockdir / "sksd.sock"
    proc = subprocess.Popen(["strace", "-f", "-qq", "-o", str(trace), "-e",
                             "trace=chmod,fchmodat,chown,fchownat,lchown,rename,renameat,renameat2,bind",
                             SKSD, "--store", env["store"], "--socket", str(sock), "--mode", "0660",
                             "--group", "nogroup", "--allow-gid", "nogroup"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_WAIT   # strace slows sksd's start
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        st = os.stat(sock)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 65534, oct(st.st_mode)
        reply = frame_call(str(sock), b"\x01")   # the very first look finds it listening
        assert reply[0] == 0, reply
    finally:
        # SIGTERM to sksd itself (strace's child): strace then exits with it.
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            for pid in f.read().split():
                os.kill(int(pid), signal.SIGTERM)
        proc.wait(10)
    calls = trace.read_text()
    assert not re.search(r"\b(chmod|fchmodat|chown|fchownat|lchown)\(", calls), calls
    assert re.search(r'rename\w*\(.*sksd\.sock\.new.*sksd\.sock"', calls), calls


def _thread_policies(pid):
    """The scheduling policy of each of the process's threads (field 41 of /proc/PID/task/TID/stat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = int(fields[41 - 3])
    return out


def test_client_threads_do_not_preempt_their_clients(env):
    """Issue 13: a thread serving a client runs SCHED_BATCH, so a request does not preempt the
    application that sent it before it waits for the reply. The accepting thread stays as it
    was."""
    sched_batch = 3
    pid = env["daemon"].proc.pid
    handle = env["handles"]["signer"]
    with socket.socket(socket.AF_UNIX) as so:
        so.settimeout(30)
        so.connect(env["daemon"].socket)
        for _ in range(20):
            req = sign_request(handle, os.urandom(32))
            so.sendall(struct.pack(">I", len(req)) + req)
            assert read_frame(so)[0] == 0
        policies = _thread_policies(pid)
        assert policies.pop(pid) == 0, "the accepting thread stays SCHED_OTHER"
        assert policies and all(p == sched_batch for p in policies.values()), policies
