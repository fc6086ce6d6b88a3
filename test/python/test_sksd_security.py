"""sksd under attack (issue 9): forked children, administrators by default, key owners, limits.

Real programs throughout: sksd, the sks tool, the sks provider in a C program that forks, and
clients speaking the wire format from processes running as throwaway uids (setpriv with bare
numeric uids that exist nowhere else on the machine).
"""

import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sksissuer as s  # noqa: E402
from test_sksd import SKS, SKSD, BUILD, provider_env, run, sign_request  # noqa: E402
from test_pcsc import rig, rig_ok  # noqa: E402,F401  (pcscd with a virtual SKS card)

FORK_ATTACK = os.path.join(BUILD, "test", "helpers", "sks_fork_attack")
UID_A, UID_B, UID_C = 40001, 40002, 40003


def as_uid(uid):
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


class Daemon:
    def __init__(self, store, sockdir, args):
        self.socket = os.path.join(sockdir, "sksd.sock")
        self.log = os.path.join(sockdir, "sksd.log")
        self.args = [SKSD, "--store", store, "--socket", self.socket, "--mode", "0666", *args]

    def start(self):
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args, stderr=self.logf)
        deadline = time.monotonic() + 15   # a loaded machine: waiting costs nothing when it is quick
        while time.monotonic() < deadline:
            if os.path.exists(self.socket):
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"sksd did not start: {self.log_text()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()

    def log_text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def status(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(field)


# A client run as another uid: sends the frames given in hex, prints the reply statuses.
CALLS = textwrap.dedent("""
    import json, socket, struct, sys
    path, frames = sys.argv[1], json.loads(sys.argv[2])
    out = []
    so = socket.socket(socket.AF_UNIX); so.settimeout(20); so.connect(path)
    def frame():
        h = b""
        while len(h) < 4:
            c = so.recv(4 - len(h))
            if not c: return None
            h += c
        n = struct.unpack(">I", h)[0]; d = b""
        while len(d) < n:
            c = so.recv(n - len(d))
            if not c: return None
            d += c
        return d
    for f in frames:
        b = bytes.fromhex(f)
        so.sendall(struct.pack(">I", len(b)) + b)
        r = frame()
        out.append(None if r is None else [r[0], r.hex()])
    print(json.dumps(out))
""")


def calls_as(uid, sock, frames):
    res = run(as_uid(uid) + [sys.executable, "-c", CALLS, sock, json.dumps([f.hex() for f in frames])])
    return json.loads(res.stdout)


def enumerate_frames(sock, uid):
    """Every key handle uid gets from enumerateKeys."""
    handles, after = [], 0
    while True:
        (reply,) = calls_as(uid, sock, [bytes([70]) + s.uint(after)])
        data = bytes.fromhex(reply[1])
        assert data[0] == 0
        after = struct.unpack(">I", data[1:5])[0]
        if after == 0:
            return handles
        handles.append(after)


@pytest.fixture(scope="module")
def store():
    base = tempfile.mkdtemp(prefix="sks-sksd-sec-")
    os.chmod(base, 0o755)
    private = os.path.join(base, "private")
    os.mkdir(private, 0o700)
    db = os.path.join(private, "store.db")
    run([SKS, "--store", db, "init"])
    keys = [("alice", []), ("carol", []), ("bob", ["--pin", "1234", "--pin-retries", "3"]),
            ("forkkey", ["--exportable"]), ("victim", ["--exportable"])]
    for name, extra in keys:
        run([SKS, "--store", db, "generate", "--name", name, "--algorithm", "P-256", "--subject", "/CN=" + name,
             *extra])
    handles = {}
    for line in run([SKS, "--store", db, "list"]).stdout.decode().splitlines():
        if line.startswith("key "):
            num, name = line[4:].split(": ", 1)
            handles[name] = int(num)
    # Keys made in-process by root belong to root; the administrator gives them away.
    run([SKSD, "--store", db, "--key-owner", f"alice={UID_A}", "--key-owner", f"carol={UID_B}",
         "--key-owner", f"bob={UID_B}", "--key-owner", f"forkkey={UID_C}"])
    yield {"base": base, "db": db, "handles": handles}
    shutil.rmtree(base, ignore_errors=True)


def start_daemon(store, name, args):
    sockdir = os.path.join(store["base"], name)
    os.makedirs(sockdir, exist_ok=True)
    os.chmod(sockdir, 0o755)
    return Daemon(store["db"], sockdir, args).start()


def keys_exist(store):
    out = run([SKS, "--store", store["db"], "list"]).stdout.decode()
    return {name for name in store["handles"] if f": {name}\n" in out + "\n"}


# Every provisioning and management method (docs/wire-format.md), each with a plausible
# argument start (a handle of a real key where the method takes one).
def admin_frames(victim):
    h = s.uint(victim)
    return {
        2: bytes([2]) + s.string("https://webpki.github.io/sks/algorithm#session.1"),
        3: bytes([3]) + s.uint(1) + s.arr(b"") + s.arr(b""),
        4: bytes([4]) + s.uint(0) + s.boolean(False),
        5: bytes([5]) + s.uint(1),
        7: bytes([7]) + s.uint(1) + s.arr(b"") + s.arr(b""),
        8: bytes([8]) + s.uint(1), 9: bytes([9]) + s.uint(1), 10: bytes([10]) + s.uint(1),
        11: bytes([11]) + s.uint(1), 12: bytes([12]) + h, 13: bytes([13]) + h, 14: bytes([14]) + h,
        15: bytes([15]) + h, 50: bytes([50]) + s.uint(1) + h, 51: bytes([51]) + s.uint(1) + h,
        52: bytes([52]) + h + h, 53: bytes([53]) + h + h,
        74: bytes([74]) + h + s.string("urn:x") + s.string("n") + s.string("v"),
        80: bytes([80]) + h + s.arr(b""), 81: bytes([81]) + h + s.arr(b""),
        82: bytes([82]) + h + s.arr(b""), 83: bytes([83]) + h + s.arr(b"") + s.arr(b"5678"),
        84: bytes([84]) + h + s.arr(b"") + s.arr(b"5678"), 90: bytes([90]) + s.uint(0),
        200: bytes([200]) + s.string("https://webpki.github.io/sks/algorithm#ec.nist.p256") + s.arr(b"0\x00"),
        201: bytes([201]) + s.uint(1),
    }


def test_without_admin_options_only_root_administers(store):
    """No --admin-*: an allowed non-root client gets ERROR_NOT_ALLOWED for every provisioning
    and management method, and the key it aimed at is untouched."""
    d = start_daemon(store, "default-admins", ["--allow-uid", str(UID_A)])
    try:
        frames = admin_frames(store["handles"]["victim"])
        replies = calls_as(UID_A, d.socket, list(frames.values()))
        for method, reply in zip(frames, replies):
            assert reply is not None, method
            assert reply[0] == 0x02, (method, reply)
            assert b"restricted to administrators" in bytes.fromhex(reply[1]), method
        # root still administers
        (reply,) = calls_as(0, d.socket, [bytes([72]) + s.uint(store["handles"]["victim"])])
        assert reply[0] == 0
    finally:
        d.stop()
    assert "victim" in keys_exist(store)


def test_user_cannot_sign_list_or_burn_pins_of_another_users_key(store):
    h = store["handles"]
    d = start_daemon(store, "owners", ["--allow-uid", str(UID_A), "--allow-uid", str(UID_B)])
    try:
        digest = b"\x11" * 32
        # A signs with its own key ...
        (mine,) = calls_as(UID_A, d.socket, [sign_request(h["alice"], digest)])
        assert mine[0] == 0
        # ... but not with B's, nor reads its attributes or protection info.
        replies = calls_as(UID_A, d.socket, [sign_request(h["carol"], digest), bytes([71]) + s.uint(h["carol"]),
                                             bytes([72]) + s.uint(h["bob"])])
        assert [r[0] for r in replies] == [0x07, 0x07, 0x07], replies
        # A lists only its own key, through the wire and through the sks tool.
        assert enumerate_frames(d.socket, UID_A) == [h["alice"]]
        e = provider_env("unix:" + d.socket)
        e["HOME"] = store["base"]
        out = run(as_uid(UID_A) + [SKS, "--device", "unix:" + d.socket, "list"], env=e).stdout.decode()
        assert "alice" in out and "carol" not in out and "bob" not in out
        # A guesses B's PIN five times: nothing is counted, bob is not locked.
        wrong = [bytes([100]) + s.uint(h["bob"]) + s.string("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256")
                 + s.arr(b"") + s.boolean(False) + s.arr(b"0000") + s.arr(digest)] * 5
        assert all(r[0] == 0x07 for r in calls_as(UID_A, d.socket, wrong))
        right = bytes([100]) + s.uint(h["bob"]) + s.string("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256") \
            + s.arr(b"") + s.boolean(False) + s.arr(b"1234") + s.arr(digest)
        (theirs,) = calls_as(UID_B, d.socket, [right])
        assert theirs[0] == 0, theirs
        assert sorted(enumerate_frames(d.socket, UID_B)) == sorted([h["carol"], h["bob"]])
        # root (an administrator) sees every key.
        assert len(enumerate_frames(d.socket, 0)) == len(h)
    finally:
        d.stop()


def test_forked_child_cannot_use_the_parents_root_connection(store):
    """A root process loads a key through sksd and forks; the child drops to an unprivileged
    uid and writes exportKey/deleteKey to every socket it holds: all refused or closed. The
    child still signs on a connection of its own."""
    h = store["handles"]
    d = start_daemon(store, "fork", ["--allow-uid", str(UID_C)])
    try:
        e = provider_env("unix:" + d.socket)
        res = run([FORK_ATTACK, "sks:name=forkkey", str(h["forkkey"]), str(UID_C), str(UID_C)], env=e,
                  check=False)
        out = res.stdout.decode()
        assert "SUCCEEDED" not in out, out
        assert res.returncode == 0, out + res.stderr.decode()
        assert "the child signed on its own connection" in out
        assert "own: fd" in out  # the child's own connection was attacked too, and refused
        # The parent's calls went through sksd's shared-memory channel, which the child
        # must not inherit either (transport/channel.c: MADV_DONTFORK).
        assert "the parent has a shared-memory channel" in out
    finally:
        d.stop()
    assert {"forkkey", "victim"} <= keys_exist(store)


SLOWLORIS = textwrap.dedent("""
    import resource, socket, sys, time
    path, kind, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks, refused = [], 0
    def connect():
        so = socket.socket(socket.AF_UNIX); so.connect(path); so.setblocking(False); return so
    for _ in range(count):
        socks.append(connect())
    end = time.time() + seconds
    hdr = (1000).to_bytes(4, "big") + b"\\x64" * 20
    pos = [0] * len(socks)
    closed = 0
    while time.time() < end:
        if kind == "slow":
            for i, so in enumerate(socks):
                try:
                    so.send(hdr[pos[i] % len(hdr):pos[i] % len(hdr) + 1]); pos[i] += 1
                except OSError:
                    closed += 1; socks[i] = connect(); pos[i] = 0
        time.sleep(0.5)
    print(closed)
""")


def test_idle_and_slowloris_clients_do_not_stop_signing(store):
    h = store["handles"]
    d = start_daemon(store, "limits", ["--allow-uid", str(UID_A), "--allow-uid", str(UID_B), "--allow-uid",
                                       str(UID_C), "--max-clients", "200", "--max-clients-per-uid", "50",
                                       "--idle-timeout", "3", "--frame-timeout", "2"])
    attackers = []
    try:
        base_threads = d.status("Threads")
        attackers.append(subprocess.Popen(as_uid(UID_B) + [sys.executable, "-c", SLOWLORIS, d.socket, "idle",
                                                           "1000", "8"], stdout=subprocess.PIPE))
        attackers.append(subprocess.Popen(as_uid(UID_C) + [sys.executable, "-c", SLOWLORIS, d.socket, "slow", "100",
                                                           "8"], stdout=subprocess.PIPE))
        time.sleep(2)
        # An allowed client signs while they hold on.
        sigs = calls_as(UID_A, d.socket, [sign_request(h["alice"], bytes([i]) * 32) for i in range(20)])
        assert all(r[0] == 0 for r in sigs), sigs
        threads, rss = d.status("Threads"), d.status("VmRSS")
        assert threads <= base_threads + 2 * 50 + 5, threads
        assert rss < 64 * 1024, rss  # kB
        slow_closed = int(attackers[1].communicate(timeout=30)[0])
        attackers[0].communicate(timeout=30)
        assert slow_closed >= 50, slow_closed  # partial frames are cut off after --frame-timeout
        log = d.log_text()
        assert "too many connections" in log
        assert "frame not complete within 2 s" in log
        # An idle connection is closed after --idle-timeout.
        with socket.socket(socket.AF_UNIX) as so:
            so.settimeout(10)
            so.connect(d.socket)
            t0 = time.time()
            assert so.recv(1) == b""
            assert 2.5 < time.time() - t0 < 6
        assert "closed idle connection" in d.log_text()
        # Everything is released: the signer still gets in, and the threads are gone.
        (after,) = calls_as(UID_A, d.socket, [sign_request(h["alice"], b"\x22" * 32)])
        assert after[0] == 0
        assert d.status("Threads") <= base_threads + 2
    finally:
        for a in attackers:
            if a.poll() is None:
                a.kill()
                a.wait()
        d.stop()


def test_refused_peer_gets_its_answer_and_no_thread(store):
    d = start_daemon(store, "refused", ["--allow-uid", str(UID_A)])
    try:
        base = d.status("Threads")
        res = run(as_uid(UID_B) + [SKS, "--device", "unix:" + d.socket, "list"],
                  env=dict(provider_env("unix:" + d.socket), HOME=store["base"]), check=False)
        assert res.returncode != 0 and b"not allowed to use the key store" in res.stderr
        code = ("import socket,sys\nss=[]\nfor _ in range(50):\n so=socket.socket(socket.AF_UNIX); so.connect(sys.argv[1]);"
                " ss.append(so)\nimport time; time.sleep(1)\nprint(sum(1 for so in ss if so.recv(4096) and so.recv(1) == b''))")
        out = run(as_uid(UID_B) + [sys.executable, "-c", code, d.socket]).stdout
        assert int(out) == 50  # each got the refusal, then the end of the stream
        assert d.status("Threads") <= base + 1
    finally:
        d.stop()


def test_forked_child_lets_go_of_the_parents_pcsc_connection(rig_ok):
    """The same fork through pcsc: the child holds no descriptor to pcscd from its parent (the
    parent's context and card connection), and signs on a context of its own."""
    res = run([FORK_ATTACK, "sks:name=ec", "1", "0", "0"], env=rig_ok["env"], check=False)
    out = res.stdout.decode()
    assert "inherited: 0 sockets" in out, out
    assert "the child signed on its own connection" in out, out
    assert res.returncode == 0, out + res.stderr.decode()


def test_oversized_request_is_refused_without_reading_it(store):
    """A non-administrator's frame header announcing 16 MiB: sksd answers at once, before any
    body arrives, and closes."""
    d = start_daemon(store, "oversize", ["--allow-uid", str(UID_A)])
    try:
        code = ("import socket,struct,sys\nso=socket.socket(socket.AF_UNIX); so.settimeout(5); so.connect(sys.argv[1])\n"
                "so.sendall(struct.pack('>I', 16 << 20) + b'\\x64')\nd=so.recv(4096)\nprint(d[4], d[7:].decode())")
        out = run(as_uid(UID_A) + [sys.executable, "-c", code, d.socket]).stdout.decode()
        assert out.startswith("9 ") and "longer than the limit of 69632 bytes" in out, out
    finally:
        d.stop()


def test_client_idle_past_the_timeout_reconnects_transparently(store):
    """sksd drops a connection idle past --idle-timeout; an application that keeps its key
    (here as the key's owner, not an administrator) signs again on a fresh connection."""
    d = start_daemon(store, "idle", ["--allow-uid", str(UID_A), "--idle-timeout", "1"])
    loop = subprocess.Popen(as_uid(UID_A) + [os.path.join(BUILD, "test", "helpers", "sks_sign_loop"),
                                             "sks:name=alice"], env=provider_env("unix:" + d.socket),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert loop.stdout.readline() == "ready\n"
        for msg in ("before", "after the idle timeout", "again"):
            loop.stdin.write(f"sign {msg}\n")
            loop.stdin.flush()
            answer = loop.stdout.readline()
            assert answer.startswith("ok "), answer
            time.sleep(2.5)
        assert d.log_text().count("closed idle connection of uid 40001") >= 2
    finally:
        loop.stdin.close()
        loop.wait(10)
        d.stop()


def test_key_given_to_a_group_serves_its_members_only(store):
    """--key-owner KEY=USER:GROUP: a member of GROUP (a supplementary group, as SO_PEERGROUPS
    reports it) uses the key; the same uid without the group does not."""
    h = store["handles"]
    run([SKSD, "--store", store["db"], "--key-owner", "victim=0:40010"])
    d = start_daemon(store, "groups", ["--allow-uid", "40004"])
    try:
        member = ["setpriv", "--reuid=40004", "--regid=40004", "--groups=40010"]
        code = ("import socket,struct,sys\nso=socket.socket(socket.AF_UNIX); so.connect(sys.argv[1])\n"
                "r=bytes.fromhex(sys.argv[2]); so.sendall(struct.pack('>I',len(r))+r); print(so.recv(4096)[4])")
        req = sign_request(h["victim"], b"\x33" * 32).hex()
        assert run(member + [sys.executable, "-c", code, d.socket, req]).stdout.strip() == b"0"
        assert run(as_uid(40004) + [sys.executable, "-c", code, d.socket, req]).stdout.strip() == b"7"
    finally:
        d.stop()
        run([SKSD, "--store", store["db"], "--key-owner", "victim=0"])


# One connection, calls before and after a pause: sends the frames of argv[2], printing each
# reply at once, waits for the file argv[4] to appear, then sends the frames of argv[3].
CALLS_WITH_PAUSE = CALLS.replace(
    "for f in frames:",
    "import os, time\n"
    "for i, f in enumerate(frames + json.loads(sys.argv[3])):\n"
    "    while i == len(frames) and not os.path.exists(sys.argv[4]): time.sleep(0.05)").replace(
    "out.append(None if r is None else [r[0], r.hex()])",
    "print(json.dumps(None if r is None else [r[0], r.hex()])); sys.stdout.flush()").replace(
    "print(json.dumps(out))", "")


def test_trigger_planted_in_the_store_cannot_forge_an_owner(store):
    """Someone who can write the store file (not the master key) plants a trigger that calls
    sksd's owner MAC to give UID_A carol's key, and fires on another user's PIN try. sksd's
    open connection notices the changed schema at its next call and refuses it; a new
    connection cannot open the store; UID_A still cannot use carol's key."""
    h = store["handles"]
    digest = b"\x11" * 32
    go = os.path.join(store["base"], "trigger-go")
    d = start_daemon(store, "trigger", ["--allow-uid", str(UID_A), "--allow-uid", str(UID_B)])
    db = sqlite3.connect(store["db"], timeout=30)
    alg = s.string("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256")
    with_pin = [bytes([100]) + s.uint(h["bob"]) + alg + s.arr(b"") + s.boolean(False) + s.arr(pin) + s.arr(digest)
                for pin in (b"1234", b"0000")]
    client = subprocess.Popen(as_uid(UID_B) + [sys.executable, "-c", CALLS_WITH_PAUSE, d.socket,
                                               json.dumps([with_pin[0].hex()]), json.dumps([with_pin[1].hex()]), go],
                              stdout=subprocess.PIPE)
    try:
        (r,) = calls_as(UID_A, d.socket, [sign_request(h["carol"], digest)])
        assert r[0] == s.ERROR_NO_KEY
        assert json.loads(client.stdout.readline())[0] == 0  # B's connection is open, the store read
        db.executescript(f"""CREATE TRIGGER evil AFTER UPDATE ON pins BEGIN
            INSERT OR REPLACE INTO key_owners (handle, uid, gid, mac) VALUES
            ({h['carol']}, {UID_A}, 4294967295, sks_owner_mac({h['carol']}, {UID_A}, 4294967295)); END;""")
        open(go, "w").close()
        out, _ = client.communicate(timeout=30)
        r = json.loads(out)
        assert r[0] == s.ERROR_STORAGE and b"integrity error" in bytes.fromhex(r[1]), r
        (r,) = calls_as(UID_A, d.socket, [sign_request(h["carol"], digest)])
        assert r is None or r[0] == s.ERROR_NO_KEY, r  # a new connection: refused at open
        assert "trigger evil" in d.log_text()
    finally:
        if client.poll() is None:
            client.kill()
        db.executescript("DROP TRIGGER IF EXISTS evil;")
        db.close()
        d.stop()


def test_owner_row_does_not_follow_a_reused_handle():
    """key_owners rows go with their key, and an owner row is bound to its key (public key),
    so a row saved before the key was deleted and put back after a new key got the same handle
    (sqlite_sequence lowered in the file) gives nobody the new key."""
    base = tempfile.mkdtemp(prefix="sks-owner-reuse-")
    os.chmod(base, 0o755)
    try:
        private = os.path.join(base, "private")
        os.mkdir(private, 0o700)
        db = os.path.join(private, "store.db")
        run([SKS, "--store", db, "init"])
        run([SKS, "--store", db, "generate", "--name", "old", "--algorithm", "P-256", "--subject", "/CN=old"])
        run([SKSD, "--store", db, "--key-owner", f"old={UID_A}"])
        con = sqlite3.connect(db, timeout=30)
        saved = con.execute("SELECT o.handle, o.uid, o.gid, o.mac FROM key_owners o JOIN keys k"
                            " ON k.handle = o.handle WHERE k.friendly_name = 'old'").fetchone()
        assert saved is not None and saved[1] == UID_A
        con.close()
        run([SKS, "--store", db, "delete", "--name", "old"])
        con = sqlite3.connect(db, timeout=30)
        assert con.execute("SELECT count(*) FROM key_owners WHERE handle = ?", (saved[0],)).fetchone()[0] == 0, \
            "the deleted key's owner row was left behind"
        con.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'keys'", (saved[0] - 1,))
        con.commit()
        con.close()
        run([SKS, "--store", db, "generate", "--name", "new", "--algorithm", "P-256", "--subject", "/CN=new"])
        con = sqlite3.connect(db, timeout=30)
        assert con.execute("SELECT handle FROM keys WHERE friendly_name = 'new'").fetchone()[0] == saved[0]
        con.execute("INSERT OR REPLACE INTO key_owners (handle, uid, gid, mac) VALUES (?, ?, ?, ?)", saved)
        con.commit()
        con.close()
        d = start_daemon({"base": base, "db": db}, "reuse", ["--allow-uid", str(UID_A)])
        try:
            (r,) = calls_as(UID_A, d.socket, [sign_request(saved[0], b"\x22" * 32)])
            assert r[0] == s.ERROR_NO_KEY, f"UID_A signed with the new key: {r}"
        finally:
            d.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)

