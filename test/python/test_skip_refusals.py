"""SKIP packages that must be refused: each is refused with an error that names the problem,
the store is byte for byte what it was, and the request stays pending so that a correct
package can still be imported. Each broken package differs from a good one in one thing.

Packages whose signature verifies but whose keys do not unwrap are the exception: the device
answers them all with one message (it must not say why: that would be an oracle on the
ciphertext) and counts them against the request (test_skip_oracle.py has the third).
"""

import datetime
import os

import pytest

import sksissuer
import skipissuer as si
import skiptools as st


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return st.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def pending(tmp_path, pki):
    """A store with one pending request on P-256."""
    store = st.SkipStore(tmp_path)
    return store, store.request("secp256r1", pki[2])


def _refused(store, data, trust, *words, name="package.der"):
    path = store.write(name, data)
    before = store.snapshot()
    res = store.import_package(path, trust, check=False)
    err = res.stderr.decode(errors="replace")
    assert res.returncode != 0, f"the package was accepted: {res.stdout.decode()}"
    assert err.startswith("sks: skip import: "), f"no error message: {err!r}"
    for w in words:
        assert w in err, f"the error does not say {w!r}: {err!r}"
    assert store.snapshot() == before, "a refused package changed the store"
    assert len(store.open_skip_sessions()) == 1, "the refused package ended the pending request"
    return err


def _issue(pki, req, types=("secp256r1", "ed25519"), aes_bits=256, **kw):
    return si.Package.issue(req, pki[1], list(types), aes_bits, **kw)


def _flip(data, index, mask=0x01):
    data = bytearray(data)
    data[index] ^= mask
    return bytes(data)


def test_untrusted_chain(pending, pki):
    store, req = pending
    stranger = si.Ca("a stranger's CA")
    pkg = si.Package.issue(req, stranger, ["secp256r1"], 256)
    _refused(store, pkg.der(), pki[2], "does not verify to the trust anchors")


def test_expired_device_certificate(pending, pki):
    store, req = pending
    past = datetime.datetime.utcnow() - datetime.timedelta(days=2)
    pkg = _issue(pki, req, cert_not_after=past)
    _refused(store, pkg.der(), pki[2], "certificate has expired")


def test_expired_issuing_ca(pending, pki, tmp_path):
    store, req = pending
    root = pki[0]
    now = datetime.datetime.utcnow()
    old_ca = si.Ca("expired issuing CA", parent=root, not_before=now - datetime.timedelta(days=30),
                   not_after=now - datetime.timedelta(days=1))
    pkg = si.Package.issue(req, old_ca, ["secp256r1"], 256)
    _refused(store, pkg.der(), pki[2], "certificate has expired", "expired issuing CA")


def test_bad_signature(pending, pki):
    store, req = pending
    pkg = _issue(pki, req)
    pkg.corrupt_signature = True
    _refused(store, pkg.der(), pki[2], "signature does not verify")


def test_content_changed_after_signing(pending, pki):
    store, req = pending
    pkg = _issue(pki, req)
    good = pkg.der()
    content = pkg.content()
    # Same length, one ciphertext bit flipped inside the signed content: the digest breaks.
    i = good.index(content) + len(content) - 3
    _refused(store, _flip(good, i), pki[2], "signature does not verify")


def test_signer_not_found_by_key_identifier(pending, pki):
    store, req = pending
    pkg = _issue(pki, req)
    pkg.signer_ski = os.urandom(20)
    _refused(store, pkg.der(), pki[2], "subjectKeyIdentifier matches no certificate")


def test_ephemeral_key_on_another_curve(pending, pki):
    store, req = pending
    pkg = _issue(pki, req, ephemeral_curve="secp384r1")
    _refused(store, pkg.der(), pki[2], "ephemeral key is on secp384r1", "factory key on prime256v1")


def test_package_for_another_factory_key(pending, pki, tmp_path):
    store, req = pending
    other = si.EcKey("secp256r1")
    other_req = si.parse_request(si.make_request(other, "someone else's device"))
    pkg = _issue(pki, other_req)
    _refused(store, pkg.der(), pki[2], "for another factory key")


UNWRAP_FAILED = "the package does not unwrap to its keys with the factory key of request"


def _refused_after_unwrap(store, data, trust):
    """A signed package whose keys do not unwrap: the one message, no key stored, the request
    still pending with one failure counted. Returns the message without the file name."""
    handle = store.open_skip_sessions()[0].provisioning_handle
    keys = store.keys_in_store()
    res = store.import_package(store.write("package.der", data), trust, check=False)
    err = res.stderr.decode(errors="replace")
    assert res.returncode != 0, f"the package was accepted: {res.stdout.decode()}"
    assert UNWRAP_FAILED in err and "verified package 1 of 3" in err, err
    assert store.keys_in_store() == keys, "a package that did not unwrap stored something"
    assert len(store.open_skip_sessions()) == 1, "one failed unwrap ended the pending request"
    assert store.failed_unwraps(handle) == 1
    return err.split("skipImport: ", 1)[1]


def _variant(pki, req, what):
    pkg = _issue(pki, req)
    k = pkg.keys[0] if what != "padding" else pkg.keys[1]
    if what == "iv":
        k.iv = _flip(k.iv, 0, 0x40)
    elif what == "first-block":
        k.ciphertext = _flip(k.ciphertext, 3, 0x80)
    elif what == "padding":
        # The last byte of the next-to-last block flips the last plaintext byte: the padding.
        k.ciphertext = _flip(k.ciphertext, len(k.ciphertext) - 17)
    else:  # a private key that does not match its container's public key and certificate
        pkg = _issue(pki, req, ["secp256r1"])
        impostor = si.EcKey("secp256r1")
        k = pkg.keys[0]
        k.container_spki = impostor.spki()
        k.cert = pki[1].issue(k.container_spki, "impostor")
    return pkg.der()


@pytest.mark.parametrize("what", ["first-block", "iv", "padding", "key-mismatch"])
def test_tampered_then_signed_does_not_say_why(tmp_path, pki, what):
    """Before: "cannot be decrypted (bad padding ...)", "does not decrypt to a PKCS#8 private
    key", "does not match its public key": one answer for each, an oracle. Now one message."""
    store = st.SkipStore(tmp_path)
    req = store.request("secp256r1", pki[2])
    msg = _refused_after_unwrap(store, _variant(pki, req, what), pki[2])
    assert msg == f"{UNWRAP_FAILED} #1 (verified package 1 of 3 allowed that did not)\n", msg


def test_key_without_a_certificate(pending, pki):
    store, req = pending
    pkg = _issue(pki, req, ["secp256r1", "ed25519"])
    pkg.keys[1].include_cert = False
    _refused(store, pkg.der(), pki[2], "container 2: its key has no certificate")


def test_unsupported_curve(pending, pki):
    store, req = pending
    pkg = _issue(pki, req, ["secp256r1", "secp256k1"])
    _refused(store, pkg.der(), pki[2], "unsupported key type secp256k1")


def test_unsupported_cipher(pending, pki):
    store, req = pending
    pkg = _issue(pki, req)
    for k in pkg.keys:
        k.cipher_oid = si.OID_AES192_CBC
    _refused(store, pkg.der(), pki[2], "unsupported cipher 2.16.840.1.101.3.4.1.22")


def test_mixed_ciphers(pending, pki):
    store, req = pending
    pkg = _issue(pki, req)
    pkg.keys[1].cipher_oid = si.OID_AES128_CBC
    _refused(store, pkg.der(), pki[2], "one package, one key")


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.99])
def test_truncated(pending, pki, cut):
    store, req = pending
    der = _issue(pki, req).der()
    _refused(store, der[:int(len(der) * cut)], pki[2], "not a DER CMS ContentInfo")


def test_garbage(pending, pki):
    store, req = pending
    _refused(store, os.urandom(3000), pki[2], "not a DER CMS ContentInfo")


def test_garbage_content(pending, pki):
    store, req = pending
    pkg = _issue(pki, req)
    pkg.content_override = b"\x30\x06\x30\x04\x02\x01\x01\x05"
    _refused(store, pkg.der(), pki[2], "not KeyPairContainers DER")


def test_unsupported_factory_curve(tmp_path):
    store = st.SkipStore(tmp_path)
    before = store.snapshot()
    trust = store.write("root.pem", si.Ca("some root").pem)
    res = store.sks("skip", "request", "--curve", "secp256k1", "--subject", "CN=x", "--trust", trust, check=False)
    assert res.returncode != 0 and b"'secp256k1' is not supported" in res.stderr
    assert store.snapshot() == before


# ------------------------------------------------------------------ the device on its own


@pytest.mark.parametrize("fault", ["content-changed", "bad-signature", "untrusted", "wrong-factory", "wrong-curve",
                                   "no-session", "garbage"])
def test_device_checks_without_the_cms_layer(pending, pki, fault):
    """skipImport straight on the wire, past every check of `sks skip import`: the device
    verifies the package itself against the anchors stored with the request; nothing is
    decrypted, nothing counted, the store unchanged."""
    store, req = pending
    handle = store.open_skip_sessions()[0].provisioning_handle
    pkg = _issue(pki, req, ["secp256r1"])
    if fault == "bad-signature":
        pkg.corrupt_signature = True
    elif fault == "untrusted":
        pkg = si.Package.issue(req, si.Ca("a stranger's CA"), ["secp256r1"], 256)
    elif fault == "wrong-factory":
        pkg = _issue(pki, si.parse_request(si.make_request(si.EcKey("secp256r1"), "someone else")))
    elif fault == "wrong-curve":
        pkg = _issue(pki, req, ephemeral_curve="secp384r1")
    der = pkg.der() if fault != "garbage" else os.urandom(2000)
    if fault == "content-changed":
        i = der.index(pkg.content()) + len(pkg.content()) - 3
        der = _flip(der, i)
    before = store.snapshot()
    res = store.skip_import_on_wire(handle + 1000 if fault == "no-session" else handle, der)
    expected = {"content-changed": "signature does not verify", "bad-signature": "signature does not verify",
                "untrusted": "does not verify to the trust anchors", "wrong-factory": "for another factory key",
                "wrong-curve": "must share the curve", "no-session": "does not exist",
                "garbage": "not a DER CMS ContentInfo"}[fault]
    assert isinstance(res, tuple) and expected in res[1], res
    assert store.snapshot() == before
    assert store.failed_unwraps(handle) == 0
