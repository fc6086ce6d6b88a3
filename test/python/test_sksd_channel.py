"""sksd's shared-memory channel (issue 13, transport/channel.c): calls without system calls.

A client asks for the channel with an empty frame after connecting; sksd answers with a sealed
memfd that both map. These tests use the real sksd and the sks provider in a real signing
process, and attack the channel from a client running as a throwaway uid that maps the
descriptor itself (Python's mmap): the page is the attacker's to write, so sksd must refuse
cleanly and keep serving everyone else.
"""

import json
import os
import struct
import subprocess
import sys
import textwrap
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_sksd import BUILD, SKS, provider_env, run, sign_request  # noqa: E402
from test_sksd_security import UID_A, UID_B, as_uid, calls_as, start_daemon, store  # noqa: E402,F401

SIGN_LOOP = os.path.join(BUILD, "test", "helpers", "sks_sign_loop")

# The attacker: maps the channel sksd passes it and abuses it. Offsets: transport/channel.c.
ATTACK = textwrap.dedent("""
    import ctypes, errno, json, mmap, os, socket, struct, sys, threading, time
    path, handle, victim, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    SLOT = 64 * 1024; SIZE = 4096 + 2 * SLOT; REQ = 4096; REP = 4096 + SLOT
    atomic = ctypes.CDLL("libatomic.so.1").__atomic_exchange_4
    atomic.restype = ctypes.c_uint32
    atomic.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int]
    out = {}

    def string(v):
        b = v.encode(); return struct.pack(">H", len(b)) + b
    def arr(b):
        return struct.pack(">H", len(b)) + b
    def sign_req(h, digest):
        return (bytes([100]) + struct.pack(">I", h) + string("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256")
                + arr(b"") + b"\\x00" + arr(b"") + arr(digest))

    class Chan:
        def __init__(self):
            self.so = socket.socket(socket.AF_UNIX); self.so.settimeout(20); self.so.connect(path)
            self.so.sendall(struct.pack(">I", 0))
            msg, fds, _, _ = socket.recv_fds(self.so, 64, 4)
            assert msg == struct.pack(">I", 9) + b"\\0sks-shm1", msg
            self.fd = fds[0]
            self.mm = mmap.mmap(self.fd, SIZE)
            self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))
            self.seq = 0
        def get(self, off):
            return struct.unpack_from("=I", self.mm, off)[0]
        def put(self, off, v):
            struct.pack_into("=I", self.mm, off, v)
        def post(self, req, length=None):
            self.mm[REQ:REQ + len(req)] = req
            self.put(4, len(req) if length is None else length)
            self.seq += 1
            self.put(0, self.seq)
            if atomic(self.base + 8, 0, 5) == 1:
                self.so.send(b"\\0")
        def wait(self, timeout=15):
            end = time.time() + timeout
            while time.time() < end:
                w = self.get(64)
                if w & 0x7FFFFFFF == self.seq:
                    n = self.get(68)
                    return bytes(self.mm[REP:REP + n])
                if w & 0x80000000:
                    return None
                time.sleep(0.0005)
            return "timeout"
        def call(self, req, length=None):
            self.post(req, length)
            r = self.wait()
            return r if r is None or r == "timeout" else r[0]

    c = Chan()
    out["sign"] = c.call(sign_req(handle, b"\\x01" * 32))
    if kind == "seal":
        res = []
        for size in (0, 4096, SIZE + 4096):
            try:
                os.ftruncate(c.fd, size); res.append("resized")
            except OSError as e:
                res.append(errno.errorcode[e.errno])
        out["resize"] = res
        out["after"] = c.call(sign_req(handle, b"\\x02" * 32))
    elif kind == "length":
        c.post(b"\\x64", 0xFFFFFFF0)
        r = c.wait()
        out["too_long"] = r[0] if isinstance(r, bytes) else r
        time.sleep(0.5)
        out["closed"] = c.get(64) >> 31
    elif kind == "rights":
        out["other_key"] = c.call(sign_req(victim, b"\\x03" * 32))
        out["delete"] = c.call(bytes([80]) + struct.pack(">I", victim) + arr(b""))
    elif kind == "race":
        stop = []
        def scribble():
            junk = os.urandom(SLOT)
            i = 0
            while not stop:
                c.mm[REQ:REQ + 4096] = junk[i % 4096:i % 4096 + 4096]
                c.put(4, (i * 2654435761) & 0xFFFF)
                i += 1
        t = threading.Thread(target=scribble); t.start()
        res = []
        for i in range(200):
            r = c.call(sign_req(handle, bytes([i]) * 32))
            res.append(r if r is None or isinstance(r, str) else "answered")
            if r is None or r == "timeout":
                break
        stop.append(1); t.join()
        out["race"] = sorted(set(res))
    elif kind == "flood":
        futex = ctypes.CDLL(None).syscall
        for _ in range(20000):
            futex(202, ctypes.c_void_p(c.base + 64), 1, 0x7FFFFFFF, None, None, 0)   # FUTEX_WAKE
            futex(202, ctypes.c_void_p(c.base + 0), 1, 0x7FFFFFFF, None, None, 0)
        for _ in range(200):
            c.put(0, c.get(0) + 1)  # requests nobody rings for
        try:
            c.so.send(b"\\0" * 4096)  # doorbells nobody owes
        except OSError:
            pass
        time.sleep(1)
        out["flood"] = "done"
    elif kind == "big":
        # A request larger than the slot: announced in the page, sent as a frame on the socket.
        big = sign_req(handle, b"\\x05" * 32) + b"\\x00" * (SLOT + 1024)
        c.post(b"", 0xFFFFFFFF)
        c.so.sendall(struct.pack(">I", len(big)) + big)
        r = c.wait()
        out["big"] = r[0] if isinstance(r, bytes) else r
        out["after"] = c.call(sign_req(handle, b"\\x06" * 32))
    elif kind == "holes":
        # No seal can be added (F_SEAL_SEAL), and punching the pages out of the file (which the
        # size seals do not stop) gives sksd fresh zero pages on its next access, not a SIGBUS.
        import fcntl
        F_ADD_SEALS, F_GET_SEALS = 1033, 1034
        out["seals"] = fcntl.fcntl(c.fd, F_GET_SEALS)
        res = []
        for seal in (0x0008, 0x0010):  # F_SEAL_WRITE, F_SEAL_FUTURE_WRITE
            try:
                fcntl.fcntl(c.fd, F_ADD_SEALS, seal); res.append("sealed")
            except OSError as e:
                res.append(errno.errorcode[e.errno])
        out["add_seal"] = res
        time.sleep(0.2)  # sksd asleep on the socket
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
        out["punch"] = libc.fallocate(c.fd, 0x01 | 0x02, 0, SIZE)  # FALLOC_FL_KEEP_SIZE | PUNCH_HOLE
        out["zeroed"] = c.get(64)
        # The punch also cleared sksd's "asleep" flag: ring the doorbell by hand.
        req = sign_req(handle, b"\\x07" * 32)
        c.mm[REQ:REQ + len(req)] = req
        c.put(4, len(req)); c.seq += 1; c.put(0, c.seq)
        atomic(c.base + 8, 0, 5); c.so.send(b"\\0")
        r = c.wait()
        out["after_punch"] = r[0] if isinstance(r, bytes) else r
    elif kind == "churn":
        # Connections that take the channel and go away at every step of its life.
        for i in range(45):
            so = socket.socket(socket.AF_UNIX); so.settimeout(20); so.connect(path)
            so.sendall(struct.pack(">I", 0))
            if i % 3 == 0:      # never reads the offer (the descriptor stays in flight)
                so.close(); continue
            msg, fds, _, _ = socket.recv_fds(so, 64, 4)
            if i % 3 == 1:      # takes the descriptor, closes everything
                os.close(fds[0]); so.close(); continue
            mm = mmap.mmap(fds[0], SIZE); os.close(fds[0])
            req = sign_req(handle, b"\\x08" * 32)
            mm[REQ:REQ + len(req)] = req
            struct.pack_into("=I", mm, 4, len(req)); struct.pack_into("=I", mm, 0, 1)
            base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
            if atomic(base + 8, 0, 5) == 1:
                so.send(b"\\0")
            so.close()          # gone before its reply
        out["churn"] = "done"
    elif kind == "idle":
        # Channels held open and idle: sksd's threads must sleep, not spin.
        chans = [Chan() for _ in range(8)]
        for ch in chans:
            ch.call(sign_req(handle, b"\\x09" * 32))
        print(json.dumps({"ready": len(chans)}), flush=True)
        sys.stdin.readline()
        out["idle"] = "done"
    elif kind == "socket":
        # Announce a request through the socket and send nothing: sksd gives up after the frame timeout.
        c.post(b"", 0xFFFFFFFF)
        out["silent"] = c.wait(timeout=15)
    print(json.dumps(out))
""")


def attack(d, uid, kind, handle, victim):
    res = run(as_uid(uid) + [sys.executable, "-c", ATTACK, d.socket, str(handle), str(victim), kind],
              timeout=120, check=False)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    return json.loads(res.stdout)


def still_serving(store, d):
    """Another user's client signs, on the socket and on a channel of its own."""
    h = store["handles"]
    (reply,) = calls_as(UID_B, d.socket, [sign_request(h["carol"], b"\x44" * 32)])
    assert reply[0] == 0, reply
    assert attack(d, UID_B, "sign", h["carol"], 0)["sign"] == 0


@pytest.fixture
def daemon(store):
    d = start_daemon(store, "channel", ["--allow-uid", str(UID_A), "--allow-uid", str(UID_B),
                                        "--frame-timeout", "2"])
    yield d
    d.stop()


def socket_receives(device, extra_env=None, count=300):
    """A process that loads a key through the provider and signs count times; the number of
    recvfrom/recvmsg calls it made (strace), and its signature of a known message."""
    env = provider_env(device)
    env.update(extra_env or {})
    trace = os.path.join(os.path.dirname(device[5:]), "strace.out")
    loop = subprocess.Popen(["strace", "-f", "-qq", "-o", trace, "-e", "trace=recvfrom,recvmsg", SIGN_LOOP,
                             "sks:name=alice"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert loop.stdout.readline() == "ready\n"
        loop.stdin.write(f"bench {count}\nsign hello\n")
        loop.stdin.flush()
        assert loop.stdout.readline().startswith(f"bench {count} ")
        sig = loop.stdout.readline()
        assert sig.startswith("ok "), sig
    finally:
        loop.stdin.close()
        loop.wait(30)
    with open(trace) as f:
        return sum(1 for line in f if "recv" in line), bytes.fromhex(sig[3:].strip())


def test_signatures_travel_through_the_shared_page(store):
    """With the channel, a signing process reads nothing from sksd's socket per signature:
    request and reply go through the page. sksd --no-shared-memory (the socket protocol)
    makes the same process read at least once per signature. The signature verifies with
    OpenSSL's default provider (python-cryptography) against the key's certificate."""
    cert = x509.load_pem_x509_certificate(run([SKS, "--store", store["db"], "cert", "--name", "alice"]).stdout)
    for args, per_call in (([], False), (["--no-shared-memory"], True)):
        d = start_daemon(store, "page" + str(len(args)), args)
        try:
            receives, sig = socket_receives("unix:" + d.socket)
        finally:
            d.stop()
        cert.public_key().verify(sig, b"hello", ec.ECDSA(hashes.SHA256()))
        if per_call:
            assert receives >= 300, receives
        else:
            assert receives < 10, receives


def test_channel_cannot_be_resized_by_the_client(store, daemon):
    """The memfd is sealed: a client's ftruncate (shrink, which would make sksd's next access a
    SIGBUS, or grow) is refused, and the channel keeps working."""
    h = store["handles"]
    out = attack(daemon, UID_A, "seal", h["alice"], 0)
    assert out["sign"] == 0
    assert out["resize"] == ["EPERM", "EPERM", "EPERM"], out
    assert out["after"] == 0
    still_serving(store, daemon)


def test_out_of_bounds_length_is_refused_and_the_connection_closed(store, daemon):
    h = store["handles"]
    out = attack(daemon, UID_A, "length", h["alice"], 0)
    assert out["sign"] == 0
    assert out["too_long"] == 9, out  # ERROR_OPTION: request longer than the limit
    assert out["closed"] == 1, out
    assert "frame longer than its limit" in daemon.log_text()
    still_serving(store, daemon)


def test_identity_from_accept_applies_to_every_call_on_the_page(store, daemon):
    """uid A, not an administrator, asks through the page to sign with uid B's key and to
    delete it: refused as on the socket."""
    h = store["handles"]
    out = attack(daemon, UID_A, "rights", h["alice"], h["carol"])
    assert out["sign"] == 0
    assert out["other_key"] not in (0, None, "timeout"), out
    assert out["delete"] == 2, out  # ERROR_NOT_ALLOWED: restricted to administrators
    still_serving(store, daemon)
    assert "carol" in run([SKS, "--store", store["db"], "list"]).stdout.decode()


def test_request_changed_while_sksd_reads_it(store, daemon):
    """A thread rewrites the request slot and its length while the client posts signatures:
    sksd answers every call (an error or a signature of whatever it copied), and nothing
    else is disturbed."""
    h = store["handles"]
    out = attack(daemon, UID_A, "race", h["alice"], 0)
    assert out["sign"] == 0
    assert out["race"] == ["answered"], out
    still_serving(store, daemon)


def test_flooded_wakes_and_doorbells_hurt_only_the_flooder(store, daemon):
    """Futex wakes on both words, sequence numbers bumped without a doorbell, and 4096
    doorbells nobody owes: sksd drops that connection at worst, and serves the others."""
    h = store["handles"]
    out = attack(daemon, UID_A, "flood", h["alice"], 0)
    assert out["sign"] == 0
    still_serving(store, daemon)
    assert daemon.proc.poll() is None


def test_request_announced_on_the_socket_but_never_sent(store, daemon):
    """The page says a request follows on the socket, and none does: sksd gives up after the
    frame timeout (2 s here) and closes; others are served meanwhile."""
    h = store["handles"]
    t0 = time.time()
    out = attack(daemon, UID_A, "socket", h["alice"], 0)
    assert out["sign"] == 0
    assert out["silent"] is None, out  # closed, not answered
    assert time.time() - t0 < 12
    assert "frame not complete within 2 s" in daemon.log_text()
    still_serving(store, daemon)


def test_request_larger_than_the_page_goes_through_the_socket(store, daemon):
    """A request larger than the page's slot (64 KiB; a user's limit is 68 KiB) is announced
    in the page and sent as a frame on the socket, which sksd reads with its usual bounds;
    the page carries the next call again."""
    h = store["handles"]
    out = attack(daemon, UID_A, "big", h["alice"], 0)
    assert out["sign"] == 0
    assert out["big"] not in (None, "timeout"), out  # answered (trailing bytes: an error)
    assert out["after"] == 0, out
    still_serving(store, daemon)


def test_seals_cannot_be_added_and_punched_pages_do_not_fault_sksd(store, daemon):
    """The memfd carries F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL: the client can add no seal
    of its own, and punching every page out of the file (which size seals allow) leaves sksd
    with zero pages, not a SIGBUS: it keeps serving, this client included."""
    h = store["handles"]
    out = attack(daemon, UID_A, "holes", h["alice"], 0)
    assert out["sign"] == 0
    assert out["seals"] == 0x0001 | 0x0002 | 0x0004, out  # F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW
    assert out["add_seal"] == ["EPERM", "EPERM"], out
    assert out["punch"] == 0 and out["zeroed"] == 0, out
    assert out["after_punch"] == 0, out
    assert daemon.proc.poll() is None
    still_serving(store, daemon)


def sksd_resources(d):
    """sksd's open descriptors and its mappings of channel memory."""
    fds = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
    with open(f"/proc/{d.proc.pid}/maps") as f:
        maps = sum(1 for line in f if "sksd-channel" in line)
    return fds, maps


def sksd_cpu_seconds(d):
    with open(f"/proc/{d.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_channels_of_vanished_clients_leave_nothing_behind(store, daemon):
    """45 connections that ask for the channel and go away: before reading the offer (the
    descriptor still in flight), right after taking it, and with a request posted but its
    reply not awaited. sksd is back to the descriptors and mappings it had before."""
    h = store["handles"]
    still_serving(store, daemon)
    time.sleep(0.5)
    before = sksd_resources(daemon)
    assert attack(daemon, UID_A, "churn", h["alice"], 0)["churn"] == "done"
    for _ in range(100):
        after = sksd_resources(daemon)
        if after == before:
            break
        time.sleep(0.1)
    assert after == before, (before, after)
    still_serving(store, daemon)


def test_idle_channels_cost_sksd_no_cpu(store, daemon):
    """Eight channels held open after a call each: sksd's threads sleep on their sockets
    (the spin budget is bounded), so two idle seconds cost it almost no CPU."""
    h = store["handles"]
    proc = subprocess.Popen(as_uid(UID_A) + [sys.executable, "-c", ATTACK, daemon.socket, str(h["alice"]), "0",
                                              "idle"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(proc.stdout.readline()) == {"ready": 8}
        time.sleep(0.2)
        t0 = sksd_cpu_seconds(daemon)
        time.sleep(2)
        spent = sksd_cpu_seconds(daemon) - t0
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(30)
    assert spent < 0.2, spent
    still_serving(store, daemon)
