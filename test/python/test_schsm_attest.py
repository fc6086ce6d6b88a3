"""What a SmartCard-HSM proves about its keys, as `sks list` ("attested") and `sks info --verify`
report it, and the hardening of the CV chain checker (outer CAR bound to the device certificate,
SHA-1 refused). Through a real pcscd + vpcd and the virtual SmartCard-HSM (tools/sks-vhsm), whose
device chain hangs under its own test root (--export-root). Forged chains and generation
responses are written into the card's state file, signed with the card's own CA and device keys
by python3-cryptography, so sks reads them from the card like real ones.
"""

import json
import os
import sys

import pytest
from cryptography.hazmat.primitives import hashes, serialization

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import provtools as pt  # noqa: E402
from test_schsm_domains import PIN, SKS, SO_PIN, Card, load_vhsm, rig  # noqa: E402,F401

OID_ECDSA_SHA1 = bytes.fromhex("04007F00070202020201")


def attested(card, *args):
    """{name: "attested" word} of `sks list --json`, and the text listing's "attested:" lines."""
    keys = json.loads(card.sks("list", "--json", *args))
    text = card.sks("list", *args)
    lines = {}
    name = None
    for line in text.splitlines():
        if line.startswith("key "):
            name = line.split(": ", 1)[1]
        elif line.startswith("  attested:"):
            lines[name] = line.split(":", 1)[1].strip()
    return {k["name"]: k.get("attested") for k in keys}, lines


class Pair:
    pass


@pytest.fixture(scope="module")
def pair(rig):
    """Cards A (slot 0) and B (slot 1) with one DKEK: A's random one (init --dkek-shares 0),
    copied into B's memory (share files would cost 10,000,000 hash rounds each). On A: keys it
    generated, one with a certificate over its response, both restored from their backups; on
    B: a key of A's restored from A's backup."""
    p = Pair()
    p.a, p.b = Card(rig, 0, "attest-a"), Card(rig, 1, "attest-b")
    for c in (p.a, p.b):
        c.sks("hsm", "init", "--so-pin-file", "-", "--pin-file", "-", "--dkek-shares", "0",
              input=f"{SO_PIN}\n{PIN}\n".encode())
    kek = json.load(open(p.a.state))["domains"][0]["kek"]
    p.b.edit_state(lambda d: d["domains"][0].__setitem__("kek", kek))
    a = p.a
    a.generate("made-here", "P-256")                                   # CE01: the card's CV request
    a.generate("rsa-here", "RSA-2048")
    a.generate("with-cert", "P-256", "--subject", "CN=with-cert")      # X.509 written over it
    for name in ("made-here", "with-cert"):
        backup = a.path(name + ".wrap")
        a.sks("hsm", "backup", "--name", name, "--out", backup, "--pin-file", "-", input=f"{PIN}\n".encode())
        a.sks("hsm", "restore", backup, "--name", "restored-" + name, "--pin-file", "-",
              input=f"{PIN}\n".encode())
    p.b.sks("hsm", "restore", a.path("made-here.wrap"), "--name", "from-a", "--pin-file", "-",
            input=f"{PIN}\n".encode())
    return p


@pytest.fixture
def card(pair):
    return pair.a


def test_list_says_which_keys_the_card_made_under_the_known_root(card):
    words, lines = attested(card, "--root", card.export_root())
    # restored-made-here was backed up with A's own generation response, but restore has the card
    # sign an X.509 certificate for it in its place (so the provider can use the key): no
    # response left to prove anything (docs/smartcard-hsm-keymgmt.md, "Attestation")
    assert words == {"made-here": "yes", "rsa-here": "yes", "with-cert": "no", "restored-made-here": "no",
                     "restored-with-cert": "no"}, words
    assert lines == words, lines


def test_list_without_the_root_is_unattested(card):
    words, lines = attested(card)
    assert words == {"made-here": "unattested", "rsa-here": "unattested", "with-cert": "no",
                     "restored-made-here": "no", "restored-with-cert": "no"}, words
    assert lines == words, lines


def test_key_restored_from_another_cards_backup_is_not_attested_there(pair):
    """B restored a key of A's from a backup that carried A's generation response; B keeps a
    certificate it signed instead (the response would name A's device, proving nothing about B):
    an error-free "no" in list, "no generation response" in hsm attest."""
    words, _ = attested(pair.b, "--root", pair.b.export_root())
    assert words == {"from-a": "no"}, words
    text = pair.b.sks("hsm", "attest", "--root", pair.b.export_root())
    line = [x for x in text.splitlines() if x.startswith("key ")][0]
    assert "no generation response" in line, text


def test_list_reads_the_chain_once_and_one_chunk_of_a_certificate(card, rig):
    """The chain is read (and verified) once per listing, not per key; a key whose CE file holds
    an X.509 certificate costs one READ BINARY of it."""
    dev = json.load(open(card.state))["device"]
    chain_len = (len(dev["device_cert"]) + len(dev["dica_cert"])) // 2
    handles = {line.split(": ", 1)[1]: int(line.split(":")[0][4:])
               for line in card.sks("list").splitlines() if line.startswith("key ")}
    since = rig.pcscd.log_size()
    card.sks("list", "--root", card.export_root())
    apdus = [a.replace(" ", "").upper() for a in rig.pcscd.apdus_since(since)]
    assert sum(a.startswith("00B12F02") for a in apdus) == chain_len // 256 + 1, apdus
    # the attestation's reads are short APDUs (Lc 04, Le 00); the driver's own reads of the key
    # files for the listing are extended ones and not counted here
    ce = "00B1CE%02X04" % handles["with-cert"]
    assert sum(a.startswith(ce) for a in apdus) == 1, " ".join(a for a in apdus if a.startswith("00B1"))


def test_info_verify_reports_the_chain_and_each_key(card):
    res = card.run("info", "--verify", "--root", card.export_root())
    text = pt._text(res.stdout)
    assert "kind:" in text and "chain:       verified (root UTSKSRCA00001)" in text, text
    listing = card.sks("list")
    handles = {line.split(": ", 1)[1]: line.split(":")[0] for line in listing.splitlines() if line.startswith("key ")}
    keys = {line.split(":")[0]: line for line in text.splitlines() if line.startswith("key ")}
    assert "attested (generated on the card" in keys[handles["made-here"]], text
    assert "no generation response" in keys[handles["restored-with-cert"]], text
    # without the root: unattested, not an error
    text = card.sks("info", "--verify")
    assert "chain:       unattested" in text and "unattested (generated by the card's device key" in text, text


def test_info_verify_on_the_software_store_says_it_cannot_attest(tmp_path):
    store = str(tmp_path / "s.db")
    env = pt.clean_env(HOME=str(tmp_path))
    pt.run([SKS, "--store", store, "init"], env=env)
    pt.run([SKS, "--store", store, "generate", "--name", "soft", "--algorithm", "P-256"], env=env)
    res = pt.run([SKS, "--store", store, "info", "--verify"], env=env, check=False)
    assert res.returncode == 3, res
    assert "cannot attest its keys" in pt._text(res.stderr), res.stderr
    # and list shows no "attested" on such a device
    keys = json.loads(pt.run([SKS, "--store", store, "list", "--json"], env=env).stdout)
    assert keys[0]["name"] == "soft" and "attested" not in keys[0], keys
    assert "attested" not in pt._text(pt.run([SKS, "--store", store, "list"], env=env).stdout)


# ---------------------------------------------------------------------------------------------
# Tampered cards (slot 1, one fresh card each)

def made_card(rig, tag):
    c = Card(rig, 1, tag)
    c.init()
    c.generate("k", "P-256")
    root = c.export_root()
    words, _ = attested(c, "--root", root)
    assert words == {"k": "yes"}, words
    return c, root


def key(d, name):
    return serialization.load_der_private_key(bytes.fromhex(d["device"][name]), None)


def resign_response(d, outer_car=None, hash_cls=hashes.SHA256):
    """CE01 re-signed by the card's device key, with another outer CAR or hash if asked."""
    v = load_vhsm()
    (_, inner, _), (_, car, _), _ = v.tlv_parse(v.tlv_parse(bytes.fromhex(d["files"]["CE01"]))[0][1])
    signed = v.tlv(0x7F21, inner) + v.tlv(0x42, outer_car.encode() if outer_car else car)
    d["files"]["CE01"] = v.tlv(0x67, signed + v.tlv(0x5F37, v.ecdsa_raw(key(d, "device_key"), signed,
                                                                          hash_cls))).hex()


def test_tampered_generation_response_is_invalid(rig):
    c, root = made_card(rig, "list-outer")
    c.edit_state(lambda d: d["files"].__setitem__("CE01", d["files"]["CE01"][:-2]
                                                  + f"{int(d['files']['CE01'][-2:], 16) ^ 1:02x}"))
    words, lines = attested(c, "--root", root)
    assert words == {"k": "INVALID"} and lines["k"].startswith("INVALID (") and "signature" in lines["k"], lines
    res = c.run("info", "--verify", "--root", root, check=False)
    assert res.returncode == 1 and "NOT attested" in pt._text(res.stdout), res


def test_tampered_device_certificate_makes_generated_keys_invalid(rig):
    c, root = made_card(rig, "list-devcert")

    def change(d):
        cert = bytearray(bytes.fromhex(d["device"]["device_cert"]))
        cert[-1] ^= 0x01                                   # the DICA's signature on it fails
        d["device"]["device_cert"] = bytes(cert).hex()

    c.edit_state(change)
    words, lines = attested(c, "--root", root)
    assert words == {"k": "INVALID"} and "chain is invalid" in lines["k"], lines
    res = c.run("info", "--verify", "--root", root, check=False)
    assert res.returncode == 1 and "chain:       INVALID" in pt._text(res.stdout), res


def test_response_for_another_device_is_not_attested(rig):
    """A response whose outer CAR names another device is no proof for this card, even when
    this card's device key signed it (as pico-hsm emulators, which share one device key, do)."""
    c, root = made_card(rig, "outer-car")
    dev_chr = json.load(open(c.state))["device"]["device_chr"]
    c.edit_state(lambda d: resign_response(d, outer_car="UTVHOTHER00001"))
    text = c.sks("hsm", "attest", "--root", root)
    line = [x for x in text.splitlines() if x.startswith("key 1:")][0]
    assert "not attested (" in line and "UTVHOTHER00001" in line and dev_chr in line, text
    words, _ = attested(c, "--root", root)
    assert words == {"k": "no"}, words


def test_sha1_device_key_and_outer_signature_are_refused(rig):
    """A device certificate whose key names id-TA-ECDSA-SHA-1 (correctly signed by the DICA)
    and a response signed with SHA-1 by that key: refused, SHA-1 never occurs in the scheme."""
    c, root = made_card(rig, "sha1-outer")
    v = load_vhsm()

    def change(d):
        dev = key(d, "device_key")
        body = v.tlv(0x7F4E, v.tlv(0x5F29, b"\x00") + v.tlv(0x42, b"UTSKSDICA00001")
                     + v.cv_ec_public_key(dev.public_key(), oid=OID_ECDSA_SHA1)
                     + v.tlv(0x5F20, d["device"]["device_chr"].encode()))
        d["device"]["device_cert"] = v.tlv(0x7F21, body + v.tlv(0x5F37, v.ecdsa_raw(key(d, "dica_key"), body))).hex()
        resign_response(d, hash_cls=hashes.SHA1)

    c.edit_state(change)
    assert "chain:       verified" in c.sks("hsm", "attest", "--chain", write_chain(c), "--root", root)
    err = c.sks_fails("hsm", "attest", "--root", root)
    assert "key 1:       NOT attested" in err and "SHA-1" in err, err
    words, lines = attested(c, "--root", root)
    assert words == {"k": "INVALID"} and "SHA-1" in lines["k"], lines


def write_chain(c):
    d = json.load(open(c.state))["device"]
    path = c.path("chain-%d.cvc" % len(os.listdir(c.tmp)))
    with open(path, "wb") as f:
        f.write(bytes.fromhex(d["device_cert"]) + bytes.fromhex(d["dica_cert"]))
    return path


def test_sha1_in_the_chain_is_refused(rig):
    """A DICA whose key names id-TA-ECDSA-SHA-1: the device certificate it signs with SHA-1 is
    refused, though every signature is mathematically good."""
    c, root = made_card(rig, "sha1-chain")
    v = load_vhsm()

    def change(d):
        dica, dev = key(d, "dica_key"), key(d, "device_key")
        rkey = key(d, "root_key")
        dbody = v.tlv(0x7F4E, v.tlv(0x5F29, b"\x00") + v.tlv(0x42, b"UTSKSRCA00001")
                      + v.cv_ec_public_key(dica.public_key(), oid=OID_ECDSA_SHA1) + v.tlv(0x5F20, b"UTSKSDICA00001"))
        d["device"]["dica_cert"] = v.tlv(0x7F21, dbody + v.tlv(0x5F37, v.ecdsa_raw(rkey, dbody))).hex()
        body = v.tlv(0x7F4E, v.tlv(0x5F29, b"\x00") + v.tlv(0x42, b"UTSKSDICA00001")
                     + v.cv_ec_public_key(dev.public_key()) + v.tlv(0x5F20, d["device"]["device_chr"].encode()))
        d["device"]["device_cert"] = v.tlv(0x7F21, body + v.tlv(0x5F37, v.ecdsa_raw(dica, body,
                                                                                     hashes.SHA1))).hex()

    c.edit_state(change)
    res = c.run("info", "--verify", "--root", root, check=False)
    out = pt._text(res.stdout)
    assert res.returncode == 1 and "chain:       INVALID" in out and "SHA-1" in out, out
    words, _ = attested(c, "--root", root)
    assert words == {"k": "INVALID"}, words
