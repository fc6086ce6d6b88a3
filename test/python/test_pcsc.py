"""The pcsc: transport through a real pcscd: the virtual SKS card (sks-vcard) sits in the vpcd
reader driver (Debian's vsmartcard-vpcd), and the provider, the openssl CLI and the independent
Python issuer reach the store only through PC/SC.

pcscd runs privately for this module (test/python/pcscrig.py's Pcscd: socket activation on a
path of ours, its own reader configuration, so a system pcscd is left alone). vpcd offers two slots: "Virtual PCD 00 00" (port P) holds a card with
extended-length APDUs, "Virtual PCD 00 01" (port P+1) a card with short APDUs only; both serve
the same store. pcscd logs every APDU (-a), which tests read to see which APDUs were used.
Both rig cards run with --allow-management (tests provision through them); the management
tests put a card without it into slot 0 for a while.
"""

import json
import os
import select
import shutil
import sqlite3
import signal
import struct
import subprocess
import sys
import tempfile
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sksissuer as s  # noqa: E402
from pcscrig import PCSCD, READERS, VPCD_DRIVER, Pcscd, free_port_pair, stop_process  # noqa: E402
from skshelpers import memory_holds  # noqa: E402

BUILD = os.environ.get("SKS_BUILD_DIR", "/work/main/build")
SKS = os.path.join(BUILD, "tools", "sks", "sks")
VCARD = os.path.join(BUILD, "tools", "sks-vcard", "sks-vcard")
SIGN_LOOP = os.path.join(BUILD, "test", "helpers", "sks_sign_loop")
PIPE = os.path.join(BUILD, "test", "helpers", "sks_transport_pipe")
READER0, READER1 = READERS
PROV = ["-provider", "default", "-provider", "sks"]
KEYS = [("ec", "P-256", "/CN=localhost"), ("rsa", "RSA-2048", "/CN=rsa on a card"), ("ed", "Ed25519", "/CN=ed")]
# Deadline for a daemon or card to come up or go away (a limit, not a pause). 15 s was too
# short on a loaded 2-core machine: with a benchmark running (load 7), a new virtual card
# (Python, its keys made on first start) took 12 s to appear in slot 0 and over 15 s in slot 1.
WAIT = 60


def run(cmd, env=None, check=True, timeout=60, **kw):
    res = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout.decode(errors='replace')}\n"
                             f"{res.stderr.decode(errors='replace')}")
    return res


class Card:
    """sks-vcard in one vpcd slot."""

    def __init__(self, store, port, log, short=False, manage=True):
        self.args = [VCARD, "--store", store, "--host", "127.0.0.1", "--port", str(port)] + (["--short"] if short else [])
        self.args += ["--allow-management"] if manage else []
        self.log = log
        self.proc = None

    def insert(self):
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args, stderr=self.logf)
        return self

    def pull(self):
        """Pulls the card out: the program dies without a goodbye, as a card would."""
        stop_process(self.proc, signal.SIGKILL)
        self.logf.close()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc)
            self.logf.close()

    def running(self):
        return self.proc is not None and self.proc.poll() is None


def frame(b):
    return struct.pack(">I", len(b)) + b


def device_call(env, spec, request, check=True):
    """One request through sks_transport_pipe SPEC; returns the reply (status byte first)."""
    res = run([PIPE, spec], env=env, input=frame(request), check=False)
    if res.returncode != 0 or len(res.stdout) < 5:
        if check:
            raise AssertionError(f"sks_transport_pipe {spec}: {res.stderr.decode(errors='replace')}")
        return None
    return res.stdout[4:]


def wait_for_card(env, reader):
    """pcscd polls its readers: wait until the card in `reader` answers getDeviceInfo."""
    deadline = time.time() + WAIT
    while True:
        reply = device_call(env, "pcsc:" + reader, b"\x01", check=False)
        if reply is not None and reply[0] == 0:
            return
        if time.time() > deadline:
            res = run([PIPE, "pcsc:" + reader], env=env, input=frame(b"\x01"), check=False)
            raise AssertionError(f"no card in {reader} after {WAIT} s: {res.stderr.decode(errors='replace')}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def rig():
    for path in (SKS, VCARD, SIGN_LOOP, PIPE, os.path.join(BUILD, "sks.so")):
        if not os.path.isfile(path):
            pytest.fail(f"missing build output {path} (build with scripts/build.sh or set SKS_BUILD_DIR)")
    for path in (PCSCD, VPCD_DRIVER):
        if not os.path.exists(path):
            pytest.fail(f"{path} is missing: scripts/install-deps.sh installs pcscd and vsmartcard-vpcd")
    base = tempfile.mkdtemp(prefix="sks-pcsc-")
    store = os.path.join(base, "store.db")
    run([SKS, "--store", store, "init"])
    for name, alg, subject in KEYS:
        run([SKS, "--store", store, "generate", "--name", name, "--algorithm", alg, "--subject", subject])
    certs = {}
    for name, _, _ in KEYS:
        certs[name] = os.path.join(base, name + ".crt")
        with open(certs[name], "wb") as f:
            f.write(run([SKS, "--store", store, "cert", "--name", name]).stdout)
    port = free_port_pair()
    pcscd = Pcscd(base, port).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSSL_", "SKS_", "PCSCLITE_"))}
    plain = dict(env)
    env.update({"PCSCLITE_CSOCK_NAME": pcscd.sock_path, "OPENSSL_MODULES": BUILD, "SKS_DEVICE": "pcsc:"})
    cards = [Card(store, port, os.path.join(base, "card0.log")),
             Card(store, port + 1, os.path.join(base, "card1.log"), short=True)]
    try:
        for c in cards:
            c.insert()
        wait_for_card(env, READER0)
        wait_for_card(env, READER1)
        yield {"base": base, "store": store, "certs": certs, "ca": store + ".issuer-ca.pem", "env": env,
               "plain": plain, "pcscd": pcscd, "cards": cards, "port": port}
    finally:
        for c in cards:
            c.stop()
        pcscd.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def rig_ok(rig):
    """The rig with both cards inserted, whatever an earlier test did to them."""
    for i, c in enumerate(rig["cards"]):
        if not c.running():
            c.insert()
            wait_for_card(rig["env"], (READER0, READER1)[i])
    return rig


def path(rig, name):
    return os.path.join(rig["base"], name)


def openssl_card(rig, *args, reader=""):
    env = dict(rig["env"], SKS_DEVICE="pcsc:" + reader)
    return run(["openssl", *args, *PROV], env=env)


def openssl_plain(rig, *args):
    """Verification by an OpenSSL with the default provider alone."""
    return run(["openssl", *args], env=rig["plain"])


# ---- the provider's operations through pcsc: ----

SIGN_CASES = {
    "ecdsa": ("ec", ["-pkeyopt", "digest:sha256"]),
    "rsa-pkcs1": ("rsa", ["-pkeyopt", "digest:sha256"]),
    "rsa-pss": ("rsa", ["-pkeyopt", "digest:sha256", "-pkeyopt", "rsa_padding_mode:pss",
                        "-pkeyopt", "rsa_pss_saltlen:digest"]),
}


@pytest.mark.parametrize("case", list(SIGN_CASES))
def test_sign_through_pcsc_verifies_with_default_provider(rig_ok, case):
    name, opts = SIGN_CASES[case]
    dgst, sig = path(rig_ok, f"dgst.{case}"), path(rig_ok, f"sig.{case}")
    with open(dgst, "wb") as f:
        f.write(os.urandom(32))
    openssl_card(rig_ok, "pkeyutl", "-sign", "-inkey", f"sks:name={name}", "-in", dgst, "-out", sig, *opts)
    res = openssl_plain(rig_ok, "pkeyutl", "-verify", "-certin", "-inkey", rig_ok["certs"][name], "-in", dgst,
                        "-sigfile", sig, *opts)
    assert b"Signature Verified Successfully" in res.stdout


def test_ed25519_sign_through_pcsc(rig_ok):
    msg, sig = path(rig_ok, "ed.msg"), path(rig_ok, "ed.sig")
    with open(msg, "wb") as f:
        f.write(b"an Ed25519 message signed through pcscd\n" * 5)
    openssl_card(rig_ok, "pkeyutl", "-sign", "-rawin", "-inkey", "sks:name=ed", "-in", msg, "-out", sig)
    res = openssl_plain(rig_ok, "pkeyutl", "-verify", "-rawin", "-certin", "-inkey", rig_ok["certs"]["ed"], "-in",
                        msg, "-sigfile", sig)
    assert b"Signature Verified Successfully" in res.stdout


def test_ecdh_both_ways(rig_ok):
    peer, peer_pub, card_pub = path(rig_ok, "peer.pem"), path(rig_ok, "peer.pub"), path(rig_ok, "ec.pub")
    ours, theirs = path(rig_ok, "z.card"), path(rig_ok, "z.peer")
    openssl_plain(rig_ok, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", peer)
    openssl_plain(rig_ok, "pkey", "-in", peer, "-pubout", "-out", peer_pub)
    openssl_plain(rig_ok, "x509", "-in", rig_ok["certs"]["ec"], "-pubkey", "-noout", "-out", card_pub)
    openssl_card(rig_ok, "pkeyutl", "-derive", "-inkey", "sks:name=ec", "-peerkey", peer_pub, "-out", ours)
    openssl_plain(rig_ok, "pkeyutl", "-derive", "-inkey", peer, "-peerkey", card_pub, "-out", theirs)
    with open(ours, "rb") as a, open(theirs, "rb") as b:
        z1, z2 = a.read(), b.read()
    assert len(z1) == 32 and z1 == z2


@pytest.mark.parametrize("pad", ["pkcs1", "oaep-sha256"])
def test_rsa_decrypt_through_pcsc(rig_ok, pad):
    opts = [] if pad == "pkcs1" else ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256"]
    plain, ct, out = path(rig_ok, f"pt.{pad}"), path(rig_ok, f"ct.{pad}"), path(rig_ok, f"out.{pad}")
    secret = os.urandom(48)
    with open(plain, "wb") as f:
        f.write(secret)
    openssl_plain(rig_ok, "pkeyutl", "-encrypt", "-certin", "-inkey", rig_ok["certs"]["rsa"], "-in", plain, "-out",
                  ct, *opts)
    openssl_card(rig_ok, "pkeyutl", "-decrypt", "-inkey", "sks:name=rsa", "-in", ct, "-out", out, *opts)
    with open(out, "rb") as f:
        assert f.read() == secret


class SServer:
    """openssl s_server with its key on the card, accepting connection after connection."""

    def __init__(self, rig, reader=""):
        self.port = free_port_pair()
        self.log = path(rig, f"s_server.{self.port}.log")
        self.logf = open(self.log, "ab")
        env = dict(rig["env"], SKS_DEVICE="pcsc:" + reader)
        # stdin stays open: s_server ends at end of input.
        self.proc = subprocess.Popen(
            ["openssl", "s_server", *PROV, "-accept", f"127.0.0.1:{self.port}", "-cert", rig["certs"]["ec"],
             "-key", "sks:name=ec", "-tls1_3"],
            env=env, stdin=subprocess.PIPE, stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + WAIT
        while "ACCEPT" not in self.log_text():
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"s_server did not start: {self.log_text()}")
            time.sleep(0.05)

    def log_text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        stop_process(self.proc)
        self.proc.stdin.close()
        self.logf.close()


def s_client(rig, port):
    return run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-CAfile", rig["ca"],
                "-verify_return_error", "-brief"], env=rig["plain"], input=b"", check=False)


def handshake_ok(res):
    err = res.stderr.decode(errors="replace")
    return res.returncode == 0 and "Protocol version: TLSv1.3" in err and "Verification: OK" in err


def signs_through_card(apdus):
    """How many signHashedData requests (method 100) went to the extended-length card."""
    return sum(1 for a in apdus if a.startswith("80 10 00 00 00") and a.split()[7] == "64")


def test_tls13_handshake_with_server_key_on_the_card(rig_ok):
    server = SServer(rig_ok)
    try:
        mark = rig_ok["pcscd"].log_size()
        res = s_client(rig_ok, server.port)
        assert handshake_ok(res), res.stderr.decode(errors="replace") + server.log_text()
        err = res.stderr.decode(errors="replace")
        assert "Signature type: ECDSA" in err and "Peer certificate: CN = localhost" in err, err
        # The handshake's one signature went through pcscd to the card.
        assert signs_through_card(rig_ok["pcscd"].apdus_since(mark)) == 1
    finally:
        server.stop()


# ---- APDU sizes: extended length, chaining and GET RESPONSE, through real pcscd ----

class PcscDevice(s.Device):
    """The issuer's device over sks_transport_pipe SPEC instead of `sks serve --stdio`."""

    def __init__(self, env, spec, stderr_path):
        self.binary = PIPE
        self.store = spec
        self.timeout = 60
        self.stderr_path = str(stderr_path)
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([PIPE, spec], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, env=env)
        self.last_request = None
        self.last_reply = None
        self._info = None


EXT_TYPE = "http://example.com/sks/pcsc-large"


def provision_large_extension(rig, reader, tag):
    """A whole provisioning session by the independent issuer through the card in `reader`,
    with an extension of the largest size the device takes, read back through the card."""
    dev = PcscDevice(rig["env"], "pcsc:" + reader, path(rig, f"pipe.{tag}.log"))
    try:
        data = os.urandom(65536)
        iss = s.Issuer(dev, ca=s.CertificateAuthority()).open()
        key = iss.provision_key(friendly_name=f"large extension {tag}")
        iss.add_extension(key, EXT_TYPE, s.SUB_TYPE_EXTENSION, data)
        iss.close()
        ext = dev.get_extension(key.handle, EXT_TYPE)
        assert ext.extension_data == data
        dev.delete_key(key.handle)
    finally:
        dev.close()


def test_extended_apdus_carry_a_large_session(rig_ok):
    """Requests over 64 KiB go as chained extended APDUs, replies over 64 KiB come back through
    GET RESPONSE with extended Le; everything smaller is one APDU each way."""
    mark = rig_ok["pcscd"].log_size()
    provision_large_extension(rig_ok, READER0, "extended")
    apdus = rig_ok["pcscd"].apdus_since(mark)
    calls = [a for a in apdus if a.startswith(("80 10 00 00 00", "90 10 00 00 00"))]
    assert calls, apdus[:5]
    assert any(a.startswith("90 10 00 00 00") for a in calls), "no chained extended APDU for the >64 KiB request"
    assert any(a.startswith("00 C0 00 00 00 00 00") for a in apdus), "no extended GET RESPONSE for the >64 KiB reply"
    # Nothing else is chained: every request under the card's limit is a single APDU.
    assert sum(a.startswith("90 10") for a in apdus) == 1
    assert not any(a.startswith(("80 10 00 00", "90 10 00 00")) and not a.startswith(("80 10 00 00 00", "90 10 00 00 00"))
                   for a in apdus), "a short CALL APDU went to the extended-length card"


def test_short_apdu_card_gets_chaining_and_get_response(rig_ok):
    """A card without extended length (it says so in its SELECT answer): every request is cut
    into chained short APDUs and every long reply is read with GET RESPONSE."""
    mark = rig_ok["pcscd"].log_size()
    provision_large_extension(rig_ok, READER1, "short")
    apdus = rig_ok["pcscd"].apdus_since(mark)
    chained = [a for a in apdus if a.startswith("90 10 00 00")]
    assert len(chained) >= 65536 // 255, len(chained)
    assert all(a.startswith("90 10 00 00 FF") for a in chained), "chained parts are full short APDUs"
    assert sum(a.startswith("00 C0 00 00") for a in apdus) >= 65536 // 256
    assert not any(a.startswith(("80 10 00 00 00", "90 10 00 00 00")) for a in apdus)


def test_reader_without_extended_length_forced_short(rig_ok):
    """SKS_PCSC_APDU=short (a reader that takes short APDUs only) against the extended card:
    an RSA decryption request (over 255 bytes) is chained, and the provider still works."""
    ct, out = path(rig_ok, "ct.short"), path(rig_ok, "out.short")
    secret = os.urandom(32)
    with open(path(rig_ok, "pt.short"), "wb") as f:
        f.write(secret)
    openssl_plain(rig_ok, "pkeyutl", "-encrypt", "-certin", "-inkey", rig_ok["certs"]["rsa"], "-in",
                  path(rig_ok, "pt.short"), "-out", ct)
    mark = rig_ok["pcscd"].log_size()
    env = dict(rig_ok["env"], SKS_DEVICE="pcsc:" + READER0, SKS_PCSC_APDU="short")
    run(["openssl", "pkeyutl", "-decrypt", *PROV, "-inkey", "sks:name=rsa", "-in", ct, "-out", out], env=env)
    with open(out, "rb") as f:
        assert f.read() == secret
    apdus = rig_ok["pcscd"].apdus_since(mark)
    assert any(a.startswith("90 10 00 00 FF") for a in apdus), "the decryption request was not chained"
    assert not any(a.startswith(("80 10 00 00 00", "90 10 00 00 00")) for a in apdus)


# ---- reader selection ----

def test_reader_by_name_and_unknown_reader(rig_ok):
    env = rig_ok["env"]
    reply = device_call(env, "pcsc:" + READER1, b"\x01")
    assert reply[0] == 0
    reply = device_call(env, "pcsc:00 01", b"\x01")  # part of a name
    assert reply[0] == 0
    res = run([PIPE, "pcsc:No Such Reader"], env=env, input=frame(b"\x01"), check=False)
    assert res.returncode != 0
    assert b'no PC/SC reader named like "No Such Reader"' in res.stderr, res.stderr


def test_first_reader_with_a_card_is_taken(rig_ok):
    """pcsc: with the first slot empty goes to the card in the second."""
    rig_ok["cards"][0].pull()
    deadline = time.time() + WAIT
    while True:
        reply = device_call(rig_ok["env"], "pcsc:", b"\x01", check=False)
        if reply is not None and reply[0] == 0:
            break
        assert time.time() < deadline, "pcsc: did not fall back to the second reader"
        time.sleep(0.1)


# ---- a card pulled and put back under one running application ----

def verify_ecdsa(rig, message, hexsig):
    with open(rig["certs"]["ec"], "rb") as f:
        pub = x509.load_pem_x509_certificate(f.read()).public_key()
    pub.verify(bytes.fromhex(hexsig), message.encode(), ec.ECDSA(hashes.SHA256()))


class SignLoop:
    """sks_sign_loop: one process that keeps its provider, key and transport for the whole test."""

    def __init__(self, rig, uri="sks:name=ec", **env):
        e = dict(rig["env"], SKS_DEVICE="pcsc:" + READER0)
        e.update(env)
        self.proc = subprocess.Popen([SIGN_LOOP, uri], env=e, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.answer()
        assert line == "ready", line + self.proc.stderr.read()

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout=90):
        """One answer line; a process that hangs fails the test instead of stopping the run."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            raise AssertionError(f"sks_sign_loop gave no answer within {timeout} s")
        return self.proc.stdout.readline().strip()

    def ask(self, line):
        self.send(line)
        return self.answer()

    def sign(self, message):
        return self.ask("sign " + message)

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_card_pulled_mid_session_then_returned(rig_ok):
    loop = SignLoop(rig_ok)
    card = rig_ok["cards"][0]
    try:
        r = loop.sign("before")
        assert r.startswith("ok "), r
        verify_ecdsa(rig_ok, "before", r[3:])

        card.pull()
        r = loop.sign("pulled")
        assert r.startswith("error "), r
        assert "card removed" in r and READER0 in r, r
        time.sleep(1)  # pcscd has seen the slot empty by now
        r = loop.sign("still out")
        assert r.startswith("error "), r
        assert READER0 in r and ("no card in reader" in r or "card removed" in r), r

        card.insert()
        deadline = time.time() + WAIT
        while True:
            r = loop.sign("returned")
            if r.startswith("ok "):
                break
            assert time.time() < deadline, f"the same process did not recover: {r}"
            time.sleep(0.2)
        verify_ecdsa(rig_ok, "returned", r[3:])
        r = loop.sign("after")
        assert r.startswith("ok "), r
        verify_ecdsa(rig_ok, "after", r[3:])
    finally:
        loop.close()


def test_s_server_survives_a_pulled_card(rig_ok):
    """openssl s_server keeps serving across the card's absence: handshakes fail while it is out,
    with the reason in s_server's log, and work again when it is back."""
    server = SServer(rig_ok, reader=READER0)
    card = rig_ok["cards"][0]
    try:
        assert handshake_ok(s_client(rig_ok, server.port)), server.log_text()
        card.pull()
        assert not handshake_ok(s_client(rig_ok, server.port))
        assert "card removed" in server.log_text() or "no card in reader" in server.log_text(), server.log_text()
        card.insert()
        deadline = time.time() + WAIT
        while not handshake_ok(s_client(rig_ok, server.port)):
            assert time.time() < deadline, server.log_text()
            time.sleep(0.2)
        assert server.proc.poll() is None
    finally:
        server.stop()


RESET_CARD = """
import ctypes, sys
pcsc = ctypes.CDLL("libpcsclite.so.1")
ctx, card, proto = ctypes.c_long(), ctypes.c_long(), ctypes.c_ulong()
assert pcsc.SCardEstablishContext(ctypes.c_ulong(2), None, None, ctypes.byref(ctx)) == 0
rv = pcsc.SCardConnect(ctx, sys.argv[1].encode(), ctypes.c_ulong(2), ctypes.c_ulong(3), ctypes.byref(card),
                       ctypes.byref(proto))
assert rv == 0, hex(rv & 0xFFFFFFFF)
assert pcsc.SCardDisconnect(card, ctypes.c_ulong(1)) == 0  # SCARD_RESET_CARD
pcsc.SCardReleaseContext(ctx)
"""


SELECT_SKS = "00 A4 04 00 06 F0 53 4B 53 00 01 00"


def reset_card(rig, reader=READER0):
    """Another PC/SC application connects to the card and resets it as it disconnects."""
    run([sys.executable, "-c", RESET_CARD, reader], env=rig["env"])


def test_card_reset_by_another_application_is_recovered_at_once(rig_ok):
    """Another application resets the card between two signatures of a running process: the
    next signature reconnects, selects the SKS application again before anything else (the
    card forgot its selection) and succeeds; so does every one after it."""
    loop = SignLoop(rig_ok)
    try:
        assert loop.sign("before").startswith("ok ")
        reset_card(rig_ok)
        mark = rig_ok["pcscd"].log_size()
        r = loop.sign("after reset")
        assert r.startswith("ok "), r
        verify_ecdsa(rig_ok, "after reset", r[3:])
        apdus = rig_ok["pcscd"].apdus_since(mark)
        assert apdus and apdus[0] == SELECT_SKS, apdus[:3]
        assert apdus[1].startswith("80 10 00 00 00"), apdus[:3]  # then the request, once
        assert sum(a.startswith("80 10") for a in apdus) == 1, apdus
        r = loop.sign("after that")
        assert r.startswith("ok "), r
        verify_ecdsa(rig_ok, "after that", r[3:])
    finally:
        loop.close()


def test_repeated_resets_each_recovered(rig_ok):
    """A reset before each of several signatures, on the short-APDU card (whose replies need
    GET RESPONSE after the reconnect): every signature verifies."""
    loop = SignLoop(rig_ok, SKS_DEVICE="pcsc:" + READER1)
    try:
        for i in range(3):
            reset_card(rig_ok, READER1)
            r = loop.sign(f"reset {i}")
            assert r.startswith("ok "), r
            verify_ecdsa(rig_ok, f"reset {i}", r[3:])
    finally:
        loop.close()


def test_card_swapped_between_calls_is_reported_then_used(rig_ok):
    """The card is pulled and put back while a process is idle: its next call says the card was
    removed from that reader (the card may be another one now, so nothing is sent to it); the
    call after connects again and signs."""
    loop = SignLoop(rig_ok)
    card = rig_ok["cards"][0]
    try:
        assert loop.sign("before").startswith("ok ")
        mark = rig_ok["pcscd"].log_size()
        card.pull()
        wait_for_removal(rig_ok["pcscd"], mark, READER0)
        card.insert()
        wait_for_card(rig_ok["env"], READER0)
        r = loop.sign("swapped")
        assert r.startswith("error ") and "card removed" in r and f'reader "{READER0}"' in r, r
        r = loop.sign("after swap")
        assert r.startswith("ok "), r
        verify_ecdsa(rig_ok, "after swap", r[3:])
    finally:
        loop.close()


def wait_for_removal(pcscd, mark, reader):
    """Until pcscd has seen the slot empty (its event thread logs it)."""
    deadline = time.time() + WAIT
    with open(pcscd.log, "rb") as f:
        while True:
            f.seek(mark)
            if f"Card Removed From {reader}".encode() in f.read():
                return
            assert time.time() < deadline, f"pcscd did not see the card leave {reader}"
            time.sleep(0.1)


def test_info_names_the_kind_of_card_and_its_reader(rig_ok):
    """sks info on pcsc: says which kind of card it found and in which reader."""
    out = run([SKS, "--device", "pcsc:", "info"], env=rig_ok["env"]).stdout.decode()
    assert f'card:        SKS card in reader "{READER0}"' in out, out
    out = run([SKS, "--device", "pcsc:00 01", "info"], env=rig_ok["env"]).stdout.decode()
    assert f'card:        SKS card in reader "{READER1}"' in out, out
    out = run([SKS, "--store", rig_ok["store"], "info"], env=rig_ok["env"]).stdout.decode()
    assert "card:" not in out, out


def test_an_sks_card_cannot_attest_and_lists_no_attested_field(rig_ok):
    """sks info --verify on an SKS card says it cannot attest (exit 3); sks list there shows no
    "attested" (only a SmartCard-HSM carries a device certificate chain)."""
    res = run([SKS, "--device", "pcsc:", "info", "--verify"], env=rig_ok["env"], check=False)
    assert res.returncode == 3 and b"cannot attest its keys" in res.stderr, res
    keys = json.loads(run([SKS, "--device", "pcsc:", "list", "--json"], env=rig_ok["env"]).stdout)
    assert keys and all("attested" not in k for k in keys), keys
    assert b"attested" not in run([SKS, "--device", "pcsc:", "list"], env=rig_ok["env"]).stdout


def test_concurrent_clients_keep_their_exchanges_whole(rig_ok):
    """Three processes sign with RSA on the short-APDU card at once: each reply needs GET
    RESPONSE, which only works if no other client's APDU comes in between (transactions)."""
    loops = [SignLoop(rig_ok, uri="sks:name=rsa", SKS_DEVICE="pcsc:" + READER1) for _ in range(3)]
    try:
        for loop in loops:
            loop.send("bench 15")
        answers = [loop.answer() for loop in loops]
        assert all(a.startswith("bench 15 ") for a in answers), answers
    finally:
        for loop in loops:
            loop.close()


def test_card_that_stops_answering_times_out_and_recovers(rig_ok):
    """pcsc-lite has no transmit timeout: the transport's own gives up on a card that hangs
    (the card program stopped with SIGSTOP), and the next call after it answers works."""
    loop = SignLoop(rig_ok, SKS_PCSC_TIMEOUT="1")
    card = rig_ok["cards"][0]
    try:
        assert loop.sign("before").startswith("ok ")
        card.proc.send_signal(signal.SIGSTOP)
        try:
            r = loop.sign("hung")
        finally:
            card.proc.send_signal(signal.SIGCONT)
        assert r.startswith("error ") and "timed out after 1 s" in r and READER0 in r, r
        deadline = time.time() + WAIT
        while True:
            r = loop.sign("answering again")
            if r.startswith("ok "):
                break
            assert time.time() < deadline, r
            time.sleep(0.2)
        verify_ecdsa(rig_ok, "answering again", r[3:])
    finally:
        loop.close()


def test_round_trip_figure(rig_ok):
    """Prints how long signatures take through pcscd, vpcd and the card (no bound is asserted:
    speed is measured, not tested). With Nagle in the way each APDU would cost ~40 ms."""
    loop = SignLoop(rig_ok)
    try:
        r = loop.ask("bench 50")
        assert r.startswith("bench 50 "), r
        seconds = float(r.split()[2])
        print(f"\npcsc: 50 ECDSA P-256 signatures through pcscd/vpcd/sks-vcard in {seconds:.3f} s "
              f"({seconds / 50 * 1000:.2f} ms each)")
    finally:
        loop.close()


# ---- management methods need --allow-management ----

# Every method that is not the User API or a read-only query about keys (docs/wire-format.md;
# the same set sksd keeps for administrators: sks_method_open_to_users).
MANAGEMENT_METHODS = {
    2: "createProvisioningSession", 3: "closeProvisioningSession", 4: "enumerateProvisioningSessions",
    5: "abortProvisioningSession",
    7: "updateKeyManagementKey", 8: "createPukPolicy", 9: "createPinPolicy", 10: "createKeyEntry",
    11: "getKeyHandle", 12: "setCertificatePath", 13: "importSymmetricKey", 14: "importPrivateKey",
    15: "addExtension", 50: "postDeleteKey", 51: "postUnlockKey", 52: "postUpdateKey",
    53: "postCloneKeyProtection", 74: "setProperty", 80: "deleteKey", 81: "exportKey", 82: "unlockKey",
    83: "changePin", 84: "setPin", 90: "updateFirmware", 200: "skipRequest", 201: "skipImport",
}
NOT_ALLOWED = 0x02


@pytest.fixture
def plain_card(rig_ok):
    """Slot 0 holds a card started WITHOUT --allow-management for one test; the next test's
    rig_ok puts the rig's own card back."""
    rig_ok["cards"][0].stop()
    card = Card(rig_ok["store"], rig_ok["port"], path(rig_ok, "card0.plain.log"), manage=False).insert()
    try:
        wait_for_card(rig_ok["env"], READER0)
        yield card
    finally:
        card.stop()


def store_rows(store):
    """Every row of every table of the store: what "changes nothing" is checked against."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(map(repr, db.execute(f'SELECT * FROM "{t}"'))) for t in tables}
    finally:
        db.close()


def handle_of(rig, name):
    for line in run([SKS, "--store", rig["store"], "list"]).stdout.decode().splitlines():
        if line.startswith("key ") and line.endswith(": " + name):
            return int(line[4:].split(":")[0])
    raise AssertionError(f"no key {name} in the store")


def new_exportable_key(rig, name):
    run([SKS, "--store", rig["store"], "generate", "--name", name, "--algorithm", "P-256", "--exportable"])
    return handle_of(rig, name)


def test_card_without_flag_refuses_every_management_method(rig_ok, plain_card):
    """Any process that reaches pcscd could provision, delete or export keys: without
    --allow-management each such method is ERROR_NOT_ALLOWED and the store is untouched."""
    h = new_exportable_key(rig_ok, "victim")
    before = store_rows(rig_ok["store"])
    for mid, method in MANAGEMENT_METHODS.items():
        request = bytes([mid]) + s.uint(h) + s.arr(b"") + s.arr(b"") + b"\x00" * 16
        reply = device_call(rig_ok["env"], "pcsc:" + READER0, request)
        assert reply[0] == NOT_ALLOWED, (method, reply)
        assert b"--allow-management" in reply, (method, reply)
    # The real attacks: export and delete a key, open a provisioning session.
    for request in (b"\x51" + s.uint(h) + s.arr(b""), b"\x50" + s.uint(h) + s.arr(b"")):
        assert device_call(rig_ok["env"], "pcsc:" + READER0, request)[0] == NOT_ALLOWED
    dev = PcscDevice(rig_ok["env"], "pcsc:" + READER0, path(rig_ok, "pipe.plain.log"))
    try:
        with pytest.raises(s.SksError) as refused:
            s.Issuer(dev, ca=s.CertificateAuthority()).open()
        assert refused.value.status == NOT_ALLOWED
    finally:
        dev.close()
    assert store_rows(rig_ok["store"]) == before
    # The User API still works on that card.
    assert device_call(rig_ok["env"], "pcsc:" + READER0, b"\x01")[0] == 0


def test_card_with_flag_exports_and_deletes(rig_ok):
    """The rig's cards run with --allow-management: the same requests work."""
    h = new_exportable_key(rig_ok, "managed")
    exported = device_call(rig_ok["env"], "pcsc:" + READER1, b"\x51" + s.uint(h) + s.arr(b""))
    assert exported[0] == 0 and len(exported) > 40, exported
    assert device_call(rig_ok["env"], "pcsc:" + READER1, b"\x50" + s.uint(h) + s.arr(b""))[0] == 0
    with pytest.raises(AssertionError):
        handle_of(rig_ok, "managed")


def test_card_keeps_no_pin_in_memory(rig_ok):
    """A PIN sent to the card in a signHashedData APDU: once the call is answered, no copy of
    it is left in the card program's memory (APDU, frame and request buffers are wiped)."""
    pin = "Qz7-pin-4863-wipe"
    pinfile = path(rig_ok, "wipe.pin")
    with open(pinfile, "w") as f:
        f.write(pin + "\n")
    run([SKS, "--store", rig_ok["store"], "generate", "--name", "wiped", "--algorithm", "P-256", "--pin-file", pinfile])
    dgst = path(rig_ok, "dgst.wipe")
    with open(dgst, "wb") as f:
        f.write(os.urandom(32))
    card = rig_ok["cards"][0]
    assert not memory_holds(card.proc.pid, pin.encode())
    openssl_card(rig_ok, "pkeyutl", "-sign", "-inkey", f"sks:name=wiped?pin-value={pin}", "-in", dgst, "-out",
                 path(rig_ok, "sig.wipe"), "-pkeyopt", "digest:sha256", reader=READER0)
    assert not memory_holds(card.proc.pid, pin.encode())
