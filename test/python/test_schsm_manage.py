"""Key management of a SmartCard-HSM with `sks` (hsm init, generate, info, delete, pin) through a
real pcscd + vpcd and the virtual SmartCard-HSM (tools/sks-vhsm); OpenSC's own tools
(sc-hsm-tool, pkcs11-tool, pkcs15-tool) judge the card afterwards, and OpenSSL's default
provider verifies the signatures.
"""

import os
import re
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import provtools as pt  # noqa: E402
from pcscrig import PcscRig  # noqa: E402

SKS = str(pt.SKS)
BUILD = str(pt.BUILD)
P11 = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
SO_PIN = "3537363231383830"
PIN = "648219"


@pytest.fixture(scope="module")
def rig():
    pt.require_build()
    for tool in ("pkcs11-tool", "pkcs15-tool", "sc-hsm-tool"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/install-deps.sh installs opensc")
    with PcscRig() as r:
        r.home = tempfile.mkdtemp(prefix="sks-schsm-home-")
        yield r
        shutil.rmtree(r.home, ignore_errors=True)


class Card:
    """A fresh virtual SmartCard-HSM in slot 0 and the commands that reach it."""

    def __init__(self, rig, tag):
        self.rig = rig
        old = rig.cards.get(0)
        if old is not None and old.running():
            old.pull()
            rig.wait_for_card(0, present=False)
        rig.vhsm(0, state=rig.path(f"{tag}.json"))
        rig.wait_for_card(0)
        self.dev = "pcsc:" + rig.reader(0)
        self.env = dict(rig.env, HOME=rig.home, OPENSSL_MODULES=BUILD)
        self.tmp = tempfile.mkdtemp(prefix=f"sks-schsm-{tag}-", dir=rig.base)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def sks(self, *args, input=None):
        return pt._text(pt.run([SKS, "--device", self.dev, *args], env=self.env, input=input).stdout)

    def sks_fails(self, *args, input=None):
        return pt.run_fails([SKS, "--device", self.dev, *args], env=self.env, input=input)

    def init(self, so=SO_PIN, pin=PIN, *extra):
        return self.sks("hsm", "init", "--so-pin-file", "-", "--pin-file", "-", *extra,
                        input=f"{so}\n{pin}\n".encode())

    def generate(self, name, alg, *extra, pin=PIN):
        return self.sks("generate", "--name", name, "--algorithm", alg, "--pin-file", "-", *extra,
                        input=f"{pin}\n".encode())

    def p11(self, *args, check=True):
        return pt._text(pt.run(["pkcs11-tool", "--module", P11, *args], env=self.env, check=check).stdout)

    def p11_fails(self, *args):
        return pt.run_fails(["pkcs11-tool", "--module", P11, *args], env=self.env)

    def p15(self, *args):
        return pt._text(pt.run(["pkcs15-tool", *args], env=self.env).stdout)


@pytest.fixture
def card(rig, request):
    return Card(rig, re.sub(r"\W", "_", request.node.name))


@pytest.fixture
def ready(card):
    card.init()
    return card


def private_labels(card, pin=PIN):
    out = card.p11("--login", "--pin", pin, "--list-objects", "--type", "privkey")
    return re.findall(r"label:\s+(\S.*)", out)


# ---- hsm init ----

def test_init_gives_a_card_opensc_logs_in_to(card):
    assert "user PIN:    not initialised" in card.sks("info")
    out = card.init()
    assert "initialised" in out and PIN not in out and SO_PIN not in out
    status = pt._text(pt.run(["sc-hsm-tool"], env=card.env).stdout)
    assert re.search(r"User PIN tries left\s*:\s*3", status), status
    card.p11("--login", "--pin", PIN, "--list-objects")
    card.p11_fails("--login", "--pin", "000000", "--list-objects")
    info = card.sks("info")
    assert "SmartCard-HSM" in info and "firmware:" in info
    assert "user PIN:    set, 2 tries left" in info, info
    assert "SO-PIN:      15 tries left" in info, info


def initialize_apdu_tlvs(card, since):
    """The TLVs of the INITIALIZE DEVICE APDU (80 50) pcscd passed to the card after `since`."""
    apdus = [bytes.fromhex(a) for a in card.rig.pcscd.apdus_since(since)]
    init = [a for a in apdus if a[:2] == b"\x80\x50"]
    assert len(init) == 1, [a.hex() for a in apdus]
    data, tlvs = init[0][5:5 + init[0][4]], {}
    while data:
        tlvs[data[0]] = data[2:2 + data[1]]
        data = data[2 + data[1]:]
    return tlvs


def test_init_options_reach_the_card(card):
    since = card.rig.pcscd.log_size()
    card.init(SO_PIN, PIN, "--pin-retries", "5", "--dkek-shares", "2", "--key-domains", "4")
    status = pt._text(pt.run(["sc-hsm-tool"], env=card.env).stdout)
    assert re.search(r"User PIN tries left\s*:\s*5", status), status
    assert "User PIN reset with SO-PIN enabled" in status, status
    assert re.search(r"DKEK shares\s*:\s*2", status) and "2 share(s) still missing" in status, status
    assert "user PIN:    set, 5 tries left" in card.sks("info")
    tlvs = initialize_apdu_tlvs(card, since)
    assert tlvs[0x92] == b"\x02" and tlvs[0x97] == b"\x04"
    assert tlvs[0x82] == bytes.fromhex(SO_PIN) and tlvs[0x81] == PIN.encode()


def test_init_without_dkek_sends_no_dkek(card):
    since = card.rig.pcscd.log_size()
    card.init()
    tlvs = initialize_apdu_tlvs(card, since)
    assert 0x92 not in tlvs and 0x97 not in tlvs and tlvs[0x91] == b"\x03"
    assert "DKEK" not in pt._text(pt.run(["sc-hsm-tool"], env=card.env).stdout)


def test_reinit_needs_force_and_the_cards_so_pin(ready):
    # a key made by OpenSC itself, which a wipe would take
    ready.p11("--login", "--pin", PIN, "--keypairgen", "--key-type", "EC:prime256v1", "--label", "keep")
    assert private_labels(ready) == ["keep"]
    err = ready.sks_fails("hsm", "init", "--so-pin-file", "-", "--pin-file", "-", input=f"{SO_PIN}\n111111\n".encode())
    assert "initialised already" in err and "ERROR_NOT_ALLOWED" in err
    since = ready.rig.pcscd.log_size()
    err = ready.sks_fails("hsm", "init", "--force", "--so-pin-file", "-", "--pin-file", "-",
                          input=b"0123456789abcdef\n111111\n")
    assert "refused the SO-PIN" in err and "ERROR_AUTHORIZATION" in err
    assert "0123456789abcdef" not in err.lower()
    # the SO-PIN went to the card in INITIALIZE only, which checked it
    with_so = [a for a in ready.rig.pcscd.apdus_since(since) if bytes.fromhex("0123456789abcdef") in bytes.fromhex(a)]
    assert len(with_so) == 1 and with_so[0].replace(" ", "").startswith("80500000"), with_so
    # nothing wiped: the key and the old PIN are still there; the wrong SO-PIN cost a try
    assert private_labels(ready) == ["keep"]
    assert "SO-PIN:      14 tries left" in ready.sks("info")
    ready.init(SO_PIN, "111111", "--force")
    ready.p11_fails("--login", "--pin", PIN, "--list-objects")
    assert private_labels(ready, "111111") == []


def test_init_refuses_malformed_so_pin_before_the_card(card):
    err = card.sks_fails("hsm", "init", "--so-pin-file", "-", "--pin-file", "-", input=b"12345\n648219\n")
    assert "16 hexadecimal digits" in err
    assert "user PIN:    not initialised" in card.sks("info")


def test_store_answers_hsm_methods_not_available(tmp_path):
    store = str(tmp_path / "s.db")
    env = pt.clean_env(HOME=str(tmp_path))
    pt.run([SKS, "--store", store, "init"], env=env)
    err = pt.run_fails([SKS, "--store", store, "hsm", "status"], env=env)
    assert "not available on this device" in err and "ERROR_NOT_AVAILABLE" in err


# ---- generate: keys OpenSC sees, certificates the card signed ----

KEYS = {
    # name: (algorithm, pkcs11-tool mechanism, pkcs11-tool signature options, provider options)
    "ec256": ("P-256", "ECDSA-SHA256", ["--signature-format", "openssl"], ["-pkeyopt", "digest:sha256"]),
    "rsa2k": ("RSA-2048", "SHA256-RSA-PKCS", [], ["-pkeyopt", "digest:sha256"]),
    "ec384": ("P-384", "ECDSA-SHA256", ["--signature-format", "openssl"], ["-pkeyopt", "digest:sha256"]),
    "ec521": ("P-521", "ECDSA-SHA256", ["--signature-format", "openssl"], ["-pkeyopt", "digest:sha256"]),
    "bp256": ("brainpoolP256r1", "ECDSA-SHA256", ["--signature-format", "openssl"], ["-pkeyopt", "digest:sha256"]),
    # a certificate longer than one UPDATE BINARY, a SIGN input longer than a short APDU
    "rsa4k": ("RSA-4096", "SHA256-RSA-PKCS", [], ["-pkeyopt", "digest:sha256"]),
}


def certificate_of(card, name):
    """The certificate OpenSC reads for the key labelled name, as PEM in a file."""
    dump = card.p15("--dump")
    m = re.search(r"X\.509 Certificate \[" + re.escape(name) + r"\].*?ID\s+:\s+([0-9a-f]+)", dump, re.S)
    assert m, f"no certificate for {name} in pkcs15-tool --dump:\n{dump}"
    pem = card.path(name + ".crt")
    with open(pem, "w") as f:
        f.write(card.p15("--read-certificate", m.group(1)))
    return pem


def write(card, name, data):
    p = card.path(name)
    with open(p, "wb") as f:
        f.write(data)
    return p


@pytest.mark.parametrize("name", list(KEYS))
def test_generated_key_opensc_lists_and_signs_and_the_provider_signs(ready, name):
    alg, mech, p11opts, provopts = KEYS[name]
    out = ready.generate(name, alg, "--subject", f"CN={name} on a card,O=sks")
    assert re.search(r"sha256: ([0-9A-F]{2}:){31}[0-9A-F]{2}", out), out
    kind = "RSA" if alg.startswith("RSA") else "EC"
    dump = ready.p15("--dump")
    assert f"Private {kind} Key [{name}]" in dump and f"X.509 Certificate [{name}]" in dump, dump
    assert name in private_labels(ready)
    certs = ready.p11("--list-objects", "--type", "cert")
    assert re.search(r"label:\s+" + re.escape(name) + r"\n", certs), certs
    cert = certificate_of(ready, name)
    subject = pt._text(pt.plain_openssl("x509", "-in", cert, "-noout", "-subject", "-nameopt", "RFC2253").stdout)
    assert f"CN={name} on a card" in subject and "O=sks" in subject
    # self-signed by the card: the default provider checks the card's signature
    assert b"OK" in pt.plain_openssl("verify", "-CAfile", cert, "-check_ss_sig", cert).stdout
    pub = card_pub = ready.path(name + ".pub")
    with open(card_pub, "wb") as f:
        f.write(pt.plain_openssl("x509", "-in", cert, "-noout", "-pubkey").stdout)
    data = write(ready, name + ".data", os.urandom(1000))
    sig = ready.path(name + ".p11sig")
    ready.p11("--login", "--pin", PIN, "--sign", "--mechanism", mech, "--label", name, *p11opts,
              "--input-file", data, "--output-file", sig)
    assert b"Verified OK" in pt.plain_openssl("dgst", "-sha256", "-verify", pub, "-signature", sig, data).stdout
    # the sks provider finds the key by its label and signs on the card
    pinfile = write(ready, "pin", PIN.encode() + b"\n")
    dgst = write(ready, name + ".dgst", os.urandom(32))
    psig = ready.path(name + ".provsig")
    pt.run(["openssl", "pkeyutl", "-sign", "-provider", "sks", "-provider", "default", "-inkey",
            f"sks:name={name}?pin-source=file:{pinfile}", "-in", dgst, "-out", psig, *provopts],
           env=dict(ready.env, SKS_DEVICE=ready.dev))
    res = pt.plain_openssl("pkeyutl", "-verify", "-certin", "-inkey", cert, "-in", dgst, "-sigfile", psig, *provopts)
    assert b"Signature Verified Successfully" in res.stdout


def test_delete_removes_the_key_for_opensc(ready):
    ready.generate("gone", "P-256", "--subject", "CN=gone")
    ready.generate("stays", "P-256", "--subject", "CN=stays")
    assert sorted(private_labels(ready)) == ["gone", "stays"]
    listed = ready.sks("list")
    assert "gone" in listed and "stays" in listed and "P-256" in listed, listed
    ready.sks("delete", "--name", "gone", "--auth-file", "-", input=f"{PIN}\n".encode())
    assert private_labels(ready) == ["stays"]
    dump = ready.p15("--dump")
    assert "[gone]" not in dump and "Private EC Key [stays]" in dump
    assert "gone" not in ready.sks("list")


def test_generate_without_subject_leaves_the_cv_request(ready):
    out = ready.generate("bare", "P-256")
    assert "certificate: none" in out
    dump = ready.p15("--dump")
    # OpenSC takes the public key from the card's CV request in CE<kid>
    assert "Private EC Key [bare]" in dump and "Public EC Key [bare]" in dump
    assert "X.509 Certificate [bare]" not in dump


def test_generate_refusals_leave_nothing_behind(ready):
    err = ready.sks_fails("generate", "--name", "bp", "--algorithm", "brainpoolP320r1", "--pin-file", "-",
                          input=f"{PIN}\n".encode())
    assert "brainpoolP320r1" in err and "ERROR_ALGORITHM" in err
    err = ready.sks_fails("generate", "--name", "nopin", "--algorithm", "P-256", "--pin-file", "-",
                          input=b"999999\n")
    assert "wrong user PIN (2 tries left)" in err and "ERROR_AUTHORIZATION" in err
    assert "999999" not in err
    assert private_labels(ready) == []


# ---- PINs ----

def test_pin_change_and_unlock_with_the_so_pin(ready):
    ready.generate("k", "P-256", "--subject", "CN=k")
    ready.sks("pin", "change", "--name", "k", "--old-file", "-", "--new-file", "-", input=f"{PIN}\n123456\n".encode())
    ready.p11("--login", "--pin", "123456", "--list-objects")
    for _ in range(3):
        ready.p11_fails("--login", "--pin", "000000", "--list-objects")
    assert "user PIN:    blocked" in ready.sks("info")
    ready.p11_fails("--login", "--pin", "123456", "--list-objects")
    ready.sks("pin", "unlock", "--name", "k", "--so-pin-file", "-", input=f"{SO_PIN}\n".encode())
    assert "user PIN:    set, 3 tries left" in ready.sks("info")
    ready.p11("--login", "--pin", "123456", "--list-objects")


# ---- attacks on the driver ----

def wire_call(card, request):
    """One raw SKS request to the card through sks_transport_pipe (one card session)."""
    import struct
    import subprocess
    pipe = os.path.join(BUILD, "test", "helpers", "sks_transport_pipe")
    res = subprocess.run([pipe, card.dev], env=card.env, input=struct.pack(">I", len(request)) + request,
                         capture_output=True, timeout=60)
    n = struct.unpack(">I", res.stdout[:4])[0]
    return res.stdout[4:4 + n]


def ecdh_request(handle, peer_spki, pin=PIN):
    import sksissuer as wire
    return (bytes([102]) + wire.uint(handle) + wire.string("https://webpki.github.io/sks/algorithm#ecdh.raw")
            + wire.arr(b"") + wire.boolean(False) + wire.arr(pin.encode()) + wire.arr(peer_spki))


def test_ecdh_peer_on_another_curve_never_reaches_the_card(ready):
    """Invalid-curve attack. A key `sks generate` made without --subject has only its CV request
    in CE<kid>, no X.509 certificate. A peer point on secp256k1 has the same length as a P-256
    point; the driver must refuse it before the card sees a DECIPHER (a card that does not check
    the point would leak its key bit by bit), and still answer a P-256 peer, OpenSSL agreeing."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    out = ready.generate("bare", "P-256")
    handle = int(re.search(r"handle:\s*(\d+)", out).group(1))
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    vhsm = ready.rig.cards[0]
    mark = len(vhsm.apdu_lines())
    evil = ec.generate_private_key(ec.SECP256K1()).public_key().public_bytes(*spki)
    reply = wire_call(ready, ecdh_request(handle, evil))
    sent = vhsm.apdu_lines()[mark:]
    assert reply[0] != 0 and b"on the curve of key" in reply, reply
    assert not any(line.startswith("62 ") for line in sent), sent
    peer = ec.generate_private_key(ec.SECP256R1())
    reply = wire_call(ready, ecdh_request(handle, peer.public_key().public_bytes(*spki)))
    assert reply[0] == 0, reply
    pub_der = ready.path("bare.pub.der")
    ready.p11("--read-object", "--type", "pubkey", "--label", "bare", "-o", pub_der)
    with open(pub_der, "rb") as f:
        ours = serialization.load_der_public_key(f.read())
    assert reply.endswith(peer.exchange(ec.ECDH(), ours)), reply


def test_verified_pin_does_not_outlive_the_process(ready):
    """The card's PIN verification is the card's, shared by every connection. After an sks
    process that verified the PIN has ended, another process reaching the card through pcscd
    without any PIN (opensc-tool with OpenSC's default driver sends a bare SIGN APDU, no SELECT,
    no VERIFY) must be refused 6982, not get a signature made with the PIN sks verified."""
    out = ready.generate("k", "P-256")
    kid = int(re.search(r"handle:\s*(\d+)", out).group(1))
    apdu = f"80:68:{kid:02X}:70:20:" + ":".join(["5A"] * 32)
    res = pt.run(["opensc-tool", "--reader", "0", "--card-driver", "default", "--send-apdu", apdu], env=ready.env,
                 check=False)
    said = pt._text(res.stdout) + pt._text(res.stderr)
    assert "SW1=0x69, SW2=0x82" in said, said
