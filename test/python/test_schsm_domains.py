"""SmartCard-HSM attestation with `sks hsm attest` through a real pcscd + vpcd and the virtual
SmartCard-HSM (tools/sks-vhsm): the card's device chain (EF 2F02) is verified up to a root the
user names (the virtual card's own test root, exported with --export-root) and the card's outer
signature on each key-generation response with the device key. The certificates a test tampers
with are changed in the card's state file, so sks reads them from the card like real ones.
"""

import datetime
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import provtools as pt  # noqa: E402
import sksissuer as wire  # noqa: E402
from pcscrig import REFUSAL_IDS, REFUSALS_AFTER_UNWRAP, VHSM, DriverPipe, PcscRig, card_objects  # noqa: E402

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
    assert "key 1:       unattested (generated by the card's device key" in text


def utc_day():
    return datetime.datetime.now(datetime.timezone.utc).date()


def cv_dates(cert_hex):
    """(effective, expiry) of a CV certificate as datetime.date, from its 5F25 and 5F24."""
    v = load_vhsm()
    body = v.tlv_dict(v.tlv_dict(v.tlv_parse(bytes.fromhex(cert_hex))[0][1])[0x7F4E])
    day = [datetime.date(2000 + d[0] * 10 + d[1], d[2] * 10 + d[3], d[4] * 10 + d[5])
           for d in (body[0x5F25], body[0x5F24])]
    return day[0], day[1]


def test_card_certificates_are_dated_by_the_utc_day_in_any_time_zone(rig):
    """sks hsm attest judges CV dates by the UTC day. The virtual card dated its chain by its
    local day: made in a zone ahead of UTC, it was "not valid before" tomorrow until UTC
    midnight. UTC+14 and UTC-12: at any hour one of the two is on another day than UTC."""
    for tz, tag in (("Etc/GMT-14", "tz-ahead"), ("Etc/GMT+12", "tz-behind")):
        state = rig.path(f"{tag}.json")
        before = utc_day()
        subprocess.run([VHSM, "--state", state, "--export-root", rig.path("tz.root"), "--export-only"],
                       env=dict(os.environ, TZ=tz), check=True)
        days = {before, utc_day()}
        with open(state) as f:
            dev = json.load(f)["device"]
        for name in ("root_cert", "dica_cert", "device_cert"):
            effective, expiry = cv_dates(dev[name])
            assert effective in days, (tz, name, effective, days)
            assert expiry.year == effective.year + 20, (tz, name, expiry)
    # The card made at UTC+14 (its state file) attests now: with local dates it failed from
    # 10:00 to 24:00 UTC.
    c = Card(rig, 1, "tz-ahead")
    try:
        text = c.sks("hsm", "attest", "--root", c.export_root())
        assert "chain:       verified" in text, text
    finally:
        rig.cards[1].pull()
        rig.wait_for_card(1, present=False)


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


def expire_device_certificate(c):
    """Re-issues the card's device certificate, correctly signed by its DICA, expired 2 days ago."""
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


def test_expired_device_certificate_is_invalid(rig):
    c = Card(rig, 0, "expired")
    c.init()
    root = c.export_root()
    expire_device_certificate(c)
    err = c.sks_fails("hsm", "attest", "--root", root)
    assert "chain:       INVALID" in err and "expired" in err, err


def test_kdm_issue_refuses_an_expired_device(rig):
    """The group signer admits no device whose certificate has expired, even if its chain
    verifies up to the root (kdm issue checks the dates as xkek derive does)."""
    c = Card(rig, 0, "kdm-expired")
    c.init()
    root = c.export_root()
    expire_device_certificate(c)
    chain = c.path("expired.cvc")
    c.sks_fails("hsm", "attest", "--root", root, "--out", chain)
    assert os.path.getsize(chain) > 0
    signer = Signer(rig, "expired")
    kdm = c.path("expired.kdm")
    res = signer.issue(chain, kdm, "--root", root, check=False)
    assert res.returncode != 0 and b"expired" in res.stderr, res.stderr
    assert not os.path.exists(kdm)


def test_store_answers_attestation_methods_not_available(tmp_path):
    store = str(tmp_path / "s.db")
    env = pt.clean_env(HOME=str(tmp_path))
    pt.run([SKS, "--store", store, "init"], env=env)
    err = pt.run_fails([SKS, "--store", store, "hsm", "attest"], env=env)
    assert "not available on this device" in err and "ERROR_NOT_AVAILABLE" in err


# ---------------------------------------------------------------------------------------------
# Key domains: two cards joined to one XKEK domain by a group signer in a software sks store

def tlv_items(data):
    """[(tag, value)] of a BER-TLV sequence (tags of 1-2 bytes), enough for a KDM."""
    out, i = [], 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            tag = tag << 8 | data[i]
            i += 1
        n = data[i]
        i += 1
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(data[i:i + k], "big")
            i += k
        out.append((tag, data[i:i + n]))
        i += n
    return out


def tlv_bytes(tag, value):
    tb = tag.to_bytes(2, "big") if tag > 0xFF else bytes([tag])
    n = len(value)
    ln = bytes([n]) if n < 0x80 else (b"\x81" + bytes([n]) if n <= 0xFF else b"\x82" + n.to_bytes(2, "big"))
    return tb + ln + value


class Signer:
    """A group signer: a brainpoolP256r1 key in a software sks store, used through the sks
    provider by `sks hsm kdm issue`."""

    def __init__(self, rig, tag):
        self.dir = tempfile.mkdtemp(prefix=f"sks-signer-{tag}-", dir=rig.base)
        self.store = os.path.join(self.dir, "signer.db")
        self.env = pt.clean_env(HOME=self.dir, OPENSSL_MODULES=BUILD)
        pt.run([SKS, "--store", self.store, "init"], env=self.env)
        pt.run([SKS, "--store", self.store, "generate", "--name", "group-signer", "--algorithm", "brainpoolP256r1"],
               env=self.env)
        pem = pt.run([SKS, "--store", self.store, "cert", "--name", "group-signer"], env=self.env).stdout
        from cryptography import x509
        self.public_key = x509.load_pem_x509_certificate(pem).public_key()

    def issue(self, device_id, out, *extra, check=True):
        return pt.run([SKS, "--store", self.store, "hsm", "kdm", "issue", "--signer", "sks:name=group-signer",
                       "--device-id", device_id, "--out", out, *extra], env=self.env, check=check)


@pytest.fixture(scope="module")
def pair(rig):
    a, b = Card(rig, 0, "dom-a"), Card(rig, 1, "dom-b")
    for c in (a, b):
        c.sks("hsm", "init", "--so-pin-file", "-", "--pin-file", "-", "--key-domains", "4",
              input=f"{SO_PIN}\n{PIN}\n".encode())
        c.chain = c.path("device-id.cvc")
        c.sks("hsm", "attest", "--root", c.export_root(), "--out", c.chain)
    return a, b


def join(card, domain, kdm):
    return card.sks("hsm", "domain", "join", "--domain", str(domain), "--pin-file", "-", kdm,
                    input=f"{PIN}\n".encode())


def device_x(card):
    from cryptography.hazmat.primitives.serialization import load_der_private_key
    with open(card.state) as f:
        key = load_der_private_key(bytes.fromhex(json.load(f)["device"]["device_key"]), None)
    return key.public_key().public_numbers().x.to_bytes(32, "big")


def test_two_cards_join_one_domain_through_the_group_signer(rig, pair):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    a, b = pair
    signer = Signer(rig, "group")
    uid = signer.public_key.public_numbers().x.to_bytes(32, "big").hex()
    uids = []
    for c in (a, b):
        kdm = c.path("member.kdm")
        signer.issue(c.chain, kdm, "--root", c.export_root())
        # the signature in the KDM verifies, by python3-cryptography, with the store's key over
        # 54 ‖ X(this card's device key)
        with open(kdm, "rb") as f:
            (tag, body), = tlv_items(f.read())
        items = dict(tlv_items(body))
        sig = items[0x54]
        der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        signer.public_key.verify(der, b"\x54" + device_x(c), ec.ECDSA(hashes.SHA256()))
        text = join(c, 1, kdm)
        uids.append([line.split()[1] for line in text.splitlines() if line.startswith("uid:")][0])
        status = c.sks("hsm", "domain", "status")
        assert f"domain 1:    XKEK, KCV 0000000000000000, UID {uid}" in status, status
    assert uids == [uid, uid]


def test_dkek_domain_create_and_status(pair):
    a, _ = pair
    out = a.sks("hsm", "domain", "create", "--domain", "2", "--dkek", "3", "--pin-file", "-", input=f"{PIN}\n".encode())
    assert "domain 2:    DKEK, 3 shares, 3 missing, KCV 0000000000000000" in out
    assert "domain 2:    DKEK, 3 shares, 3 missing" in a.sks("hsm", "domain", "status")
    err = a.sks_fails("hsm", "domain", "create", "--domain", "2", "--dkek", "1", "--pin-file", "-",
                      input=f"{PIN}\n".encode())
    assert "key domain 2 exists already" in err


def test_membership_for_another_card_is_refused(rig, pair):
    a, b = pair
    signer = Signer(rig, "other-card")
    kdm = b.path("for-b.kdm")
    signer.issue(b.chain, kdm, "--root", b.export_root())
    err = a.sks_fails("hsm", "domain", "join", "--domain", "3", "--pin-file", "-", kdm, input=f"{PIN}\n".encode())
    assert "refused the key domain membership" in err, err
    assert "domain 3" not in a.sks("hsm", "domain", "status")


def test_membership_signed_by_another_signer_is_refused(rig, pair):
    a, _ = pair
    group, intruder = Signer(rig, "real"), Signer(rig, "intruder")
    good, forged = a.path("good.kdm"), a.path("intruder.kdm")
    group.issue(a.chain, good, "--root", a.export_root())
    intruder.issue(a.chain, forged, "--root", a.export_root())
    # the group signer's name (63) with the intruder's signature (54) over this card's key
    with open(good, "rb") as f:
        g = dict(tlv_items(tlv_items(f.read())[0][1]))
    with open(forged, "rb") as f:
        i = dict(tlv_items(tlv_items(f.read())[0][1]))
    spliced = a.path("spliced.kdm")
    with open(spliced, "wb") as f:
        f.write(tlv_bytes(0x30, b"".join(tlv_bytes(t, v) for t, v in
                                         [(0x06, g[0x06]), (0x61, g[0x61]), (0x62, g[0x62]), (0x63, g[0x63]),
                                          (0x54, i[0x54])])))
    err = a.sks_fails("hsm", "domain", "join", "--domain", "3", "--pin-file", "-", spliced, input=f"{PIN}\n".encode())
    assert "refused the key domain membership" in err, err
    assert "domain 3" not in a.sks("hsm", "domain", "status")


def test_kdm_issue_refuses_an_unattested_device(rig, pair):
    a, _ = pair
    signer = Signer(rig, "strict")
    res = signer.issue(a.chain, a.path("never.kdm"), check=False)
    assert res.returncode != 0 and b"unattested" in res.stderr
    assert not os.path.exists(a.path("never.kdm"))


def kcv_of(text, domain):
    for line in text.splitlines():
        if line.startswith(f"domain {domain}:") and "KCV " in line:
            return line.split("KCV ")[1].split(",")[0].strip()
    raise AssertionError(f"no KCV of domain {domain} in:\n{text}")


def xkek_request(card, domain, tag="xkek"):
    out = card.path(f"{tag}-{domain}.req")
    text = card.sks("hsm", "xkek", "request", "--domain", str(domain), "--out", out, "--pin-file", "-",
                    input=f"{PIN}\n".encode())
    handle = [line.split()[1] for line in text.splitlines() if line.startswith("handle:")][0]
    return handle, out


def test_two_cards_derive_the_same_xkek(rig, pair):
    a, b = pair
    ha, req_a = xkek_request(a, 1)
    hb, req_b = xkek_request(b, 1)
    # the request is the card's answer (67, its outer signature by the device key) + EF 2F02
    with open(req_a, "rb") as f:
        data = f.read()
    assert data[0] == 0x67 and data.endswith(open(a.chain, "rb").read())
    since = len(rig.cards[0].apdu_lines())
    out_a = a.sks("hsm", "xkek", "derive", "--key", ha, "--root", b.export_root(), "--pin-file", "-", req_b,
                  input=f"{PIN}\n".encode())
    assert rig.cards[0].count(0x62, since) == 1
    out_b = b.sks("hsm", "xkek", "derive", "--key", hb, "--root", a.export_root(), "--pin-file", "-", req_a,
                  input=f"{PIN}\n".encode())
    assert "peer:        device" in out_a and "verified" in out_a
    kcv = kcv_of(out_a, 1)
    assert kcv != "0" * 16 and kcv == kcv_of(out_b, 1)
    assert kcv_of(a.sks("hsm", "domain", "status"), 1) == kcv_of(b.sks("hsm", "domain", "status"), 1) == kcv


def test_xkek_derive_checks_the_peer_on_the_host_first(rig, pair):
    a, b = pair
    ha, _ = xkek_request(a, 1, "second")
    _, req_b = xkek_request(b, 1, "second")
    with open(req_b, "rb") as f:
        good = f.read()
    with open(b.chain, "rb") as f:
        chain = f.read()
    req_len = len(good) - len(chain)
    assert good[req_len:] == chain
    dev_len = len(chain) - len(bytes.fromhex(state(b)["device"]["dica_cert"]))
    cases = {
        # the request's outer signature (its last byte) is no longer the device's
        "outer": good[:req_len - 1] + bytes([good[req_len - 1] ^ 1]) + chain,
        # the peer's device certificate changed (the last byte of its signature)
        "chain": good[:req_len] + chain[:dev_len - 1] + bytes([chain[dev_len - 1] ^ 1]) + chain[dev_len:],
    }
    for what, data in cases.items():
        path = a.path(f"bad-{what}.req")
        with open(path, "wb") as f:
            f.write(data)
        since = len(rig.cards[0].apdu_lines())
        err = a.sks_fails("hsm", "xkek", "derive", "--key", ha, "--root", b.export_root(), "--pin-file", "-", path,
                          input=f"{PIN}\n".encode())
        assert rig.cards[0].count(0x62, since) == 0, what       # the card never saw it
        assert ("not signed by its device" if what == "outer" else "chain is invalid") in err, err
    # without the peer's root the chain is unattested: refused too
    err = a.sks_fails("hsm", "xkek", "derive", "--key", ha, "--pin-file", "-", req_b, input=f"{PIN}\n".encode())
    assert "unattested" in err


P11 = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"


def test_key_migrates_through_the_xkek_domain(rig, pair):
    """After test_two_cards_derive_the_same_xkek: a key made on card A in domain 1 is wrapped
    there, unwrapped on card B, and B's signature (made through OpenSC's pkcs11-tool) verifies with the public
    key A printed, checked by OpenSSL's default provider."""
    a, b = pair
    text = a.sks("hsm", "xkek", "generate", "--domain", "1", "--name", "migrant", "--pin-file", "-",
                 input=f"{PIN}\n".encode())
    handle = [line.split()[1] for line in text.splitlines() if line.startswith("handle:")][0]
    pub = a.path("migrant.pub.pem")
    with open(pub, "w") as f:
        f.write(text[text.index("-----BEGIN PUBLIC KEY-----"):])
    wrapped = a.path("migrant.wrap")
    out = a.sks("hsm", "xkek", "wrap", "--key", handle, "--out", wrapped, "--pin-file", "-", input=f"{PIN}\n".encode())
    assert kcv_of(a.sks("hsm", "domain", "status"), 1) in out       # wrapped under the domain's XKEK
    out = b.sks("hsm", "xkek", "unwrap", "--name", "migrant", "--pin-file", "-", wrapped, input=f"{PIN}\n".encode())
    assert "name:        migrant" in out
    msg, dgst, sig = b.path("msg"), b.path("msg.sha256"), b.path("msg.sig")
    with open(msg, "wb") as f:
        f.write(b"signed on card B with a key card A made\n")
    pt.run(["openssl", "dgst", "-sha256", "-binary", "-out", dgst, msg], env=pt.clean_env())
    # OpenSC names the key by SHA-1 of its EC point: that of the key card A made
    with open(pub, "rb") as f:
        point = serialization.load_pem_public_key(f.read()).public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    key_id = hashlib.sha1(point).hexdigest()
    # plain ECDSA over the hash: the card's algorithm 70, which the key's list allows (70, 92)
    pt.run(["pkcs11-tool", "--module", P11, "--slot-index", "1", "--login", "--pin", PIN, "--sign", "--mechanism",
            "ECDSA", "--id", key_id, "--signature-format", "openssl", "-i", dgst, "-o", sig], env=b.env)
    res = pt.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-in", dgst, "-sigfile", sig],
                 env=pt.clean_env())
    assert b"Signature Verified Successfully" in res.stdout


def xkek_generate(card, name):
    """A migratable P-256 key in domain 1: (handle, PEM file of the public key the card printed)."""
    text = card.sks("hsm", "xkek", "generate", "--domain", "1", "--name", name, "--pin-file", "-",
                    input=f"{PIN}\n".encode())
    handle = [line.split()[1] for line in text.splitlines() if line.startswith("handle:")][0]
    pub = card.path(f"{name}.pub.pem")
    with open(pub, "w") as f:
        f.write(text[text.index("-----BEGIN PUBLIC KEY-----"):])
    return handle, pub


def test_migrated_key_has_a_certificate_and_signs_through_the_provider(rig, pair):
    """After test_two_cards_derive_the_same_xkek: a key moved from card A to card B gets an X.509
    certificate card B signs for it, so OpenSC shows the certificate with the key and the sks
    provider offers the key: `openssl pkeyutl` and `openssl dgst` sign on card B, and OpenSSL's
    default provider verifies with the public key card A printed."""
    from cryptography import x509
    a, b = pair
    handle, pub = xkek_generate(a, "provided")
    wrapped = a.path("provided.wrap")
    a.sks("hsm", "xkek", "wrap", "--key", handle, "--out", wrapped, "--pin-file", "-", input=f"{PIN}\n".encode())
    out = b.sks("hsm", "xkek", "unwrap", "--name", "provided", "--subject", "CN=moved key,O=sks", "--days", "30",
                "--pin-file", "-", wrapped, input=f"{PIN}\n".encode())
    assert "CN=moved key" in out and "self-signed by the card" in out, out
    with open(pub, "rb") as f:
        a_key = serialization.load_pem_public_key(f.read())
    point = a_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    key_id = hashlib.sha1(point).hexdigest()
    # OpenSC reads the certificate beside the key (same iD) on card B; it is for card A's key
    reader = b.dev[len("pcsc:"):]
    certs = pt._text(pt.run(["pkcs11-tool", "--module", P11, "--slot-index", "1", "--list-objects", "--type", "cert"],
                            env=b.env).stdout)
    assert re.search(r"ID:\s+" + key_id, certs), certs
    pem = pt._text(pt.run(["pkcs15-tool", "--reader", reader, "--read-certificate", key_id], env=b.env).stdout)
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert cert.public_key().public_numbers() == a_key.public_numbers()
    assert cert.subject.rfc4514_string() in ("CN=moved key,O=sks", "O=sks,CN=moved key")
    assert (cert.not_valid_after - cert.not_valid_before).days == 30
    cert_file = b.path("provided.crt")
    with open(cert_file, "w") as f:
        f.write(pem)
    assert b"OK" in pt.plain_openssl("verify", "-CAfile", cert_file, "-check_ss_sig", cert_file).stdout
    # the provider signs on card B
    pinfile = b.path("pin")
    with open(pinfile, "w") as f:
        f.write(PIN + "\n")
    uri = f"sks:name=provided?pin-source=file:{pinfile}"
    env = dict(b.env, SKS_DEVICE=b.dev)
    msg, dgst, sig, dsig = b.path("p.msg"), b.path("p.sha256"), b.path("p.sig"), b.path("p.dgst.sig")
    with open(msg, "wb") as f:
        f.write(os.urandom(300))
    pt.run(["openssl", "dgst", "-sha256", "-binary", "-out", dgst, msg], env=pt.clean_env())
    pt.run(["openssl", "pkeyutl", "-sign", "-provider", "sks", "-provider", "default", "-inkey", uri, "-in", dgst,
            "-out", sig, "-pkeyopt", "digest:sha256"], env=env)
    res = pt.plain_openssl("pkeyutl", "-verify", "-pubin", "-inkey", pub, "-in", dgst, "-sigfile", sig,
                           "-pkeyopt", "digest:sha256")
    assert b"Signature Verified Successfully" in res.stdout
    pt.run(["openssl", "dgst", "-sha256", "-provider", "sks", "-provider", "default", "-sign", uri, "-out", dsig, msg],
           env=env)
    res = pt.plain_openssl("dgst", "-sha256", "-verify", pub, "-signature", dsig, msg)
    assert b"Verified OK" in res.stdout


def test_unwrap_stores_the_certificate_the_wrap_file_carries(rig, pair):
    """A wrap file with the key's X.509 certificate (sc-hsm-tool's third field): card B stores that
    certificate, not a new one, when it is for the request's key; one for another key is not
    stored: the card signs a certificate for its own key instead."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives import hashes
    a, b = pair
    handle, pub = xkek_generate(a, "carried")
    wrapped = a.path("carried.wrap")
    a.sks("hsm", "xkek", "wrap", "--key", handle, "--out", wrapped, "--pin-file", "-", input=f"{PIN}\n".encode())
    with open(wrapped, "rb") as f:
        fields = tlv_items(tlv_items(f.read())[0][1])
    with open(pub, "rb") as f:
        a_key = serialization.load_pem_public_key(f.read())
    issuer = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()

    def certificate(subject_key, cn):
        name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)])
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(subject_key)
                .serial_number(x509.random_serial_number()).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=10)).sign(issuer, hashes.SHA256()))

    def wrap_file(name, cert):
        # blob, the CV request where a PrKD would stand, the certificate third
        body = b"".join(tlv_bytes(t, v) for t, v in fields) + cert.public_bytes(serialization.Encoding.DER)
        path = b.path(name)
        with open(path, "wb") as f:
            f.write(tlv_bytes(0x30, body))
        return path

    good = certificate(a_key, "carried by the file")
    out = b.sks("hsm", "xkek", "unwrap", "--name", "carried", "--pin-file", "-", wrap_file("good.wrap", good),
                input=f"{PIN}\n".encode())
    assert "from the wrap file" in out, out
    point = a_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    reader = b.dev[len("pcsc:"):]
    pem = pt._text(pt.run(["pkcs15-tool", "--reader", reader, "--read-certificate", hashlib.sha1(point).hexdigest()],
                          env=b.env).stdout)
    assert x509.load_pem_x509_certificate(pem.encode()) == good
    # the same blob again, with a certificate of another key
    other = certificate(ec.generate_private_key(ec.SECP256R1()).public_key(), "another key")
    res = b.run("hsm", "xkek", "unwrap", "--name", "carried-again", "--pin-file", "-",
                wrap_file("other.wrap", other), input=f"{PIN}\n".encode())
    assert b"not for the key's CV request" in res.stderr and b"self-signed by the card" in res.stdout, res
    stored = x509.load_pem_x509_certificate(b.run("cert", "--name", "carried-again").stdout)
    assert stored.public_key().public_numbers() == a_key.public_numbers()
    assert stored.subject.rfc4514_string() == "CN=carried-again"


def test_unwrap_refuses_a_request_of_another_key(rig, pair):
    """The CV request travelling with a blob must be the wrapped key's: the card proves it by
    signing, so a swapped request (another key of card A) leaves no key on card B."""
    a, b = pair
    made = []
    for name in ("first", "second"):
        text = a.sks("hsm", "xkek", "generate", "--domain", "1", "--name", name, "--pin-file", "-",
                     input=f"{PIN}\n".encode())
        made.append([line.split()[1] for line in text.splitlines() if line.startswith("handle:")][0])
    files = []
    for h in made:
        path = a.path(f"k{h}.wrap")
        a.sks("hsm", "xkek", "wrap", "--key", h, "--out", path, "--pin-file", "-", input=f"{PIN}\n".encode())
        with open(path, "rb") as f:
            files.append(dict(tlv_items(tlv_items(f.read())[0][1])))
    swapped = b.path("swapped.wrap")
    with open(swapped, "wb") as f:   # the first key's blob with the second key's request
        f.write(tlv_bytes(0x30, b"".join(tlv_bytes(t, v) for t, v in [(0x04, files[0][0x04])]
                                         + [(t, v) for t, v in files[1].items() if t != 0x04])))
    before = b.sks("list")
    err = b.sks_fails("hsm", "xkek", "unwrap", "--name", "swapped", "--pin-file", "-", swapped,
                      input=f"{PIN}\n".encode())
    assert "not the key of the CV request" in err, err
    assert b.sks("list") == before


# ---- a card that refuses half-way through an unwrap (sks-vhsm --fault) ----

def b_keys(b):
    """Card B as OpenSC sees it: every key and file (opensc-tool's ENUMERATE OBJECTS) and the
    private keys pkcs15-tool lists."""
    p15 = pt._text(pt.run(["pkcs15-tool", "--reader", "1", "--list-keys"], env=b.env).stdout)
    return card_objects(b.env, 1), sorted(re.findall(r"Private \w+ Key \[(.*)\]", p15))


def wrapped_on_a(a, name):
    handle, _ = xkek_generate(a, name)
    wrapped = a.path(f"{name}.wrap")
    a.sks("hsm", "xkek", "wrap", "--key", handle, "--out", wrapped, "--pin-file", "-", input=f"{PIN}\n".encode())
    return wrapped


@pytest.mark.parametrize("fault,after,named", REFUSALS_AFTER_UNWRAP, ids=REFUSAL_IDS)
def test_unwrap_refused_half_way_leaves_no_key(rig, pair, fault, after, named):
    """After test_two_cards_derive_the_same_xkek: a key wrapped on card A goes into card B
    (UNWRAP KEY answers 9000), then B refuses the next step (sks-vhsm --fault): the unwrap
    fails naming that step, and B holds exactly the keys and files OpenSC saw before — the
    unwrapped key, and its PrKD when it was written, are deleted again."""
    a, b = pair
    wrapped = wrapped_on_a(a, f"refused-{fault}-{after}")
    before = b_keys(b)
    rig.reinsert(1, fault=fault, fault_after=after)
    try:
        mark = len(rig.cards[1].apdu_lines())
        err = b.sks_fails("hsm", "xkek", "unwrap", "--name", f"refused-{fault}-{after}", "--pin-file", "-", wrapped,
                          input=f"{PIN}\n".encode())
        log = rig.cards[1].apdu_lines()[mark:]
    finally:
        rig.reinsert(1)
    assert named in err and re.search(r"the new key \d+ was deleted again", err), err
    assert b_keys(b) == before
    unwrapped = [line for line in log if line.startswith("74 ") and " sw=9000 " in line]
    assert len(unwrapped) == 1, log
    kid = re.search(r" p1=([0-9A-F]{2}) ", unwrapped[0]).group(1)
    assert any(line.startswith("E4 ") and f"data=CC{kid}" in line for line in log), log


def test_unwrap_with_a_65_byte_label_sends_nothing(rig, pair):
    """hsmDomainUnwrapKey (228) with a label of 65 bytes (a SmartCard-HSM label is at most 64) is
    refused by the driver, naming the limit, before it sends card B a single APDU (B's log
    shows none); the same request with 64 bytes unwraps the key."""
    from cryptography import x509
    a, b = pair
    with open(wrapped_on_a(a, "long-label"), "rb") as f:
        fields = dict(tlv_items(tlv_items(f.read())[0][1]))
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "moved")]).public_bytes()

    def request(label):
        return (bytes([228]) + wire.arr(PIN.encode()) + wire.string(label) + wire.arr(fields[0x04])
                + wire.arr(tlv_bytes(0x67, fields[0x67])) + wire.arr(b"") + wire.arr(subject) + wire.uint(30))

    before = b_keys(b)
    pipe = DriverPipe(os.path.join(BUILD, "test", "helpers", "sks_transport_pipe"), b.dev, b.env)
    try:
        reply, sent = pipe.apdus_of(rig.cards[1], request("L" * 65))
        assert reply[0] != 0 and b"friendly name (the key's label) must be 1..64 bytes" in reply, reply
        assert sent == [], sent
        assert b_keys(b) == before
        reply, sent = pipe.apdus_of(rig.cards[1], request("l" * 64))
        assert reply[0] == 0 and len(sent) > 0, reply
    finally:
        pipe.close()
    assert "l" * 64 in b_keys(b)[1]
