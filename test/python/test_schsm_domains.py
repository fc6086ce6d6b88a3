"""SmartCard-HSM attestation with `sks hsm attest` through a real pcscd + vpcd and the virtual
SmartCard-HSM (tools/sks-vhsm): the card's device chain (EF 2F02) is verified up to a root the
user names (the virtual card's own test root, exported with --export-root) and the card's outer
signature on each key-generation response with the device key. The certificates a test tampers
with are changed in the card's state file, so sks reads them from the card like real ones.
"""

import datetime
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import tempfile

import pytest
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import provtools as pt  # noqa: E402
from pcscrig import VHSM, PcscRig  # noqa: E402

SKS = str(pt.SKS)
BUILD = str(pt.BUILD)
SO_PIN = "3537363231383830"
PIN = "648219"


def load_vhsm():
    """The virtual card's own CV encoders, to re-sign a certificate as its DICA would."""
    loader = importlib.machinery.SourceFileLoader("sks_vhsm", VHSM)
    spec = importlib.util.spec_from_loader("sks_vhsm", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def rig():
    pt.require_build()
    with PcscRig() as r:
        r.home = tempfile.mkdtemp(prefix="sks-domains-home-")
        yield r
        shutil.rmtree(r.home, ignore_errors=True)


class Card:
    """A virtual SmartCard-HSM in a slot and the sks commands that reach it."""

    def __init__(self, rig, slot, tag):
        self.rig = rig
        self.slot = slot
        old = rig.cards.get(slot)
        if old is not None and old.running():
            old.pull()
            rig.wait_for_card(slot, present=False)
        self.state = rig.path(f"{tag}.json")
        rig.vhsm(slot, state=self.state)
        rig.wait_for_card(slot)
        self.dev = "pcsc:" + rig.reader(slot)
        self.env = dict(rig.env, HOME=rig.home, OPENSSL_MODULES=BUILD)
        self.tmp = tempfile.mkdtemp(prefix=f"sks-domains-{tag}-", dir=rig.base)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def run(self, *args, input=None, check=True):
        return pt.run([SKS, "--device", self.dev, *args], env=self.env, input=input, check=check)

    def sks(self, *args, input=None):
        return pt._text(self.run(*args, input=input).stdout)

    def sks_fails(self, *args, input=None):
        return pt.run_fails([SKS, "--device", self.dev, *args], env=self.env, input=input)

    def init(self):
        return self.sks("hsm", "init", "--so-pin-file", "-", "--pin-file", "-", input=f"{SO_PIN}\n{PIN}\n".encode())

    def generate(self, name, alg, *extra):
        return self.sks("generate", "--name", name, "--algorithm", alg, "--pin-file", "-", *extra,
                        input=f"{PIN}\n".encode())

    def export_root(self):
        path = self.path("root.cvcert")
        if not os.path.exists(path):
            self.rig.cards[self.slot].export_root(path)
        return path

    def edit_state(self, change):
        """Takes the card out, lets change(state dict) edit its memory, and puts it back."""
        self.rig.cards[self.slot].pull()
        self.rig.wait_for_card(self.slot, present=False)
        with open(self.state) as f:
            d = json.load(f)
        change(d)
        with open(self.state, "w") as f:
            json.dump(d, f)
        self.rig.cards[self.slot].insert()
        self.rig.wait_for_card(self.slot)


@pytest.fixture(scope="module")
def card(rig):
    c = Card(rig, 0, "attest")
    c.init()
    c.generate("made-here", "P-256")                      # CE01 keeps the card's CV request
    c.generate("with-cert", "P-256", "--subject", "CN=with-cert")   # CE02: X.509 over it
    return c


def state(card):
    with open(card.state) as f:
        return json.load(f)


def test_chain_verifies_with_the_exported_root_and_keys_are_attested(card):
    out = card.path("chain.cvc")
    text = card.sks("hsm", "attest", "--root", card.export_root(), "--out", out)
    dev = state(card)["device"]
    assert f"device:      {dev['device_chr']}" in text
    assert "chain:       verified (root UTSKSRCA00001)" in text
    lines = {line.split(":")[0]: line for line in text.splitlines() if line.startswith("key ")}
    assert "attested (generated on the card" in lines["key 1"], text
    assert "no generation response" in lines["key 2"], text
    # --out holds EF 2F02 exactly as the card keeps it: device certificate ‖ DICA certificate
    with open(out, "rb") as f:
        assert f.read() == bytes.fromhex(dev["device_cert"]) + bytes.fromhex(dev["dica_cert"])
    # and the exported file verifies offline the same way
    assert "chain:       verified" in pt._text(pt.run([SKS, "hsm", "attest", "--chain", out, "--root",
                                                         card.export_root()], env=card.env).stdout)


def test_unknown_root_is_unattested_not_an_error(card):
    text = card.sks("hsm", "attest")
    assert "chain:       unattested" in text and "UTSKSRCA00001" in text and "not a known root" in text
    assert "key 1:       not attested (the device chain is not verified)" in text


def test_a_root_that_did_not_sign_the_chain_is_invalid(card, rig):
    other = Card(rig, 1, "other-root")
    try:
        err = card.sks_fails("hsm", "attest", "--root", other.export_root())
    finally:
        rig.cards[1].pull()
        rig.wait_for_card(1, present=False)
    # same name (every virtual card calls its root UTSKSRCA00001), other key: the DICA fails
    assert "chain:       INVALID" in err


def flip_last_byte(hexstr):
    b = bytearray(bytes.fromhex(hexstr))
    b[-1] ^= 0x01
    return bytes(b).hex()


def test_tampered_device_certificate_is_invalid(rig):
    c = Card(rig, 0, "tampered")
    c.init()
    root = c.export_root()
    assert "verified" in c.sks("hsm", "attest", "--root", root)

    def change(d):
        cert = bytearray(bytes.fromhex(d["device"]["device_cert"]))
        i = cert.index(d["device"]["device_chr"].encode())    # the CHR inside the signed body
        cert[i + len(d["device"]["device_chr"]) - 1] ^= 0x01     # UTVH...00001 -> ...00000
        d["device"]["device_cert"] = bytes(cert).hex()

    c.edit_state(change)
    err = c.sks_fails("hsm", "attest", "--root", root)
    assert "chain:       INVALID" in err and "signature" in err, err


def test_bad_outer_signature_on_a_key_generation_response(rig):
    c = Card(rig, 0, "outer")
    c.init()
    c.generate("k", "brainpoolP256r1")
    root = c.export_root()
    assert "key 1:       attested" in c.sks("hsm", "attest", "--root", root)

    def change(d):
        # the outer signature (5F37 at the end of the 67 request) no longer matches
        d["files"]["CE01"] = flip_last_byte(d["files"]["CE01"])

    c.edit_state(change)
    err = c.sks_fails("hsm", "attest", "--root", root)
    assert "chain:       verified" in err
    assert "key 1:       NOT attested" in err and "signature" in err, err


def test_expired_device_certificate_is_invalid(rig):
    c = Card(rig, 0, "expired")
    c.init()
    root = c.export_root()
    v = load_vhsm()

    def change(d):
        dev = d["device"]
        dica = serialization.load_der_private_key(bytes.fromhex(dev["dica_key"]), None)
        key = serialization.load_der_private_key(bytes.fromhex(dev["device_key"]), None)
        issued = datetime.date.today() - datetime.timedelta(days=800)
        expired = datetime.date.today() - datetime.timedelta(days=2)
        chat = v.tlv(0x7F4C, v.tlv(0x06, v.OID_CHAT_ROLE) + v.tlv(0x53, b"\x00"))
        body = v.tlv(0x7F4E, v.tlv(0x5F29, b"\x00") + v.tlv(0x42, b"UTSKSDICA00001")
                     + v.cv_ec_public_key(key.public_key()) + v.tlv(0x5F20, dev["device_chr"].encode()) + chat
                     + v.tlv(0x5F25, v.cv_date(issued)) + v.tlv(0x5F24, v.cv_date(expired)))
        # correctly signed by the DICA: only the date is wrong
        dev["device_cert"] = v.tlv(0x7F21, body + v.tlv(0x5F37, v.ecdsa_raw(dica, body))).hex()

    c.edit_state(change)
    err = c.sks_fails("hsm", "attest", "--root", root)
    assert "chain:       INVALID" in err and "expired" in err, err


def test_store_answers_attestation_methods_not_available(tmp_path):
    store = str(tmp_path / "s.db")
    env = pt.clean_env(HOME=str(tmp_path))
    pt.run([SKS, "--store", store, "init"], env=env)
    err = pt.run_fails([SKS, "--store", store, "hsm", "attest"], env=env)
    assert "not available on this device" in err and "ERROR_NOT_AVAILABLE" in err
