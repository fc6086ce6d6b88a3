"""Key owners of a shared device (sksd) follow their keys: see also test_sksd_security.py
(test_owner_row_does_not_follow_a_reused_handle, test_trigger_planted_in_the_store_cannot_forge_an_owner)."""

import hashlib
import os
import shutil
import struct
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

import sksissuer as s
from test_sksd import SKS, sign_request
from test_sksd_security import SKSD, UID_A, UID_B, calls_as, run, start_daemon
from test_sksd_security import store as sksd_store  # noqa: F401  (root's keys given to uids A and B)


def test_updated_key_keeps_its_owner(new_issuer, device, store, ec_kmk):
    """The owner MAC names the key's public key; postUpdateKey gives the key a new one and the
    key keeps its owner (the control for test_owner_row_does_not_follow_a_reused_handle)."""
    a = new_issuer(kmk=ec_kmk)
    old = a.provision_key()
    a.close()
    run([SKSD, "--store", str(store), "--key-owner", f"#{old.handle}={UID_A}"])
    b = new_issuer()
    new = b.provision_key()
    b.post_update_key(new, old, kmk=ec_kmk)
    b.close()
    base = tempfile.mkdtemp(prefix="sks-owner-update-")
    os.chmod(base, 0o755)
    d = start_daemon({"base": base, "db": str(store)}, "update", ["--allow-uid", str(UID_A), "--allow-uid", str(UID_B)])
    try:
        (r,) = calls_as(UID_A, d.socket, [sign_request(old.handle, b"\x33" * 32)])
        assert r[0] == 0, r
        (r,) = calls_as(UID_B, d.socket, [sign_request(old.handle, b"\x33" * 32)])
        assert r is None or r[0] != 0, r
    finally:
        d.stop()
        shutil.rmtree(base, ignore_errors=True)


def certificate_sha256(store, name):
    pem = run([SKS, "--store", store["db"], "cert", "--name", name]).stdout
    return hashlib.sha256(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)).digest()


def found_by_certificate(reply):
    """The handles of a findKeysByCertificate (202) reply."""
    assert reply is not None and reply[0] == 0, reply
    data = bytes.fromhex(reply[1])
    n = struct.unpack(">H", data[1:3])[0]
    assert len(data) == 3 + 4 * n, data.hex()
    return [struct.unpack(">I", data[3 + 4 * i:7 + 4 * i])[0] for i in range(n)]


def test_find_keys_by_certificate_names_only_the_callers_keys(sksd_store):
    """findKeysByCertificate (202) answers as enumerateKeys does: a user asking for the
    certificate of another user's key (carol: uid B) gets no handle, the owner gets it."""
    store = sksd_store
    h = store["handles"]
    d = start_daemon(store, "find-by-cert", ["--allow-uid", str(UID_A), "--allow-uid", str(UID_B)])
    try:
        find = {name: bytes([202]) + s.arr(certificate_sha256(store, name)) for name in ("alice", "carol")}
        a_alice, a_carol = calls_as(UID_A, d.socket, [find["alice"], find["carol"]])
        b_alice, b_carol = calls_as(UID_B, d.socket, [find["alice"], find["carol"]])
    finally:
        d.stop()
    assert found_by_certificate(a_alice) == [h["alice"]]
    assert found_by_certificate(a_carol) == []
    assert found_by_certificate(b_alice) == []
    assert found_by_certificate(b_carol) == [h["carol"]]
