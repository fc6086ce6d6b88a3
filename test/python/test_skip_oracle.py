"""skipImport was a CBC padding oracle (issue 9): the device decrypted a package's containers
before anything proved them authentic, answered "bad padding" and "not PKCS#8" differently,
and a failed import left the request open, so anyone holding a package for a pending request
could recover its private keys call by call and then import the real package unnoticed.

Now the device verifies the whole package against the anchors stored with the request
before it decrypts anything, answers every unwrap failure alike, and withdraws the request
at the third verified package that does not unwrap (SKIP_MAX_FAILED_UNWRAPS). Packages
refused by the signature check never reach a decryption and are not counted.

The factory key itself was the other way in (review F2): it had no PIN and any algorithm, so
after the import keyAgreement(factory, ecdh.raw, the package's ephemeral public key) gave Z,
whose rightmost bytes are the package's AES key, and the package (not secret) then opened in
clear. The factory key is now endorsed for ECDSA signatures only (docs/skip.md).
"""

import os

import pytest

import sksissuer as s
import skipissuer as si
import skiptools as st
from skshelpers import expect_error


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return st.make_pki(tmp_path_factory.mktemp("pki"))


def _flip_at(data, index, value):
    return data[:index] + bytes([value]) + data[index + 1:]


def _old_layout(handle, pkg, k, ciphertext):
    """skipImport's arguments as the method took them before (issue 9): the ephemeral key,
    the AES key size, the factory certificate and the containers, with no signature at all."""
    k.ciphertext, saved = ciphertext, k.ciphertext
    epki = k.epki()
    k.ciphertext = saved
    body = s.uint(handle) + s.arr(pkg.ephemeral.spki()) + s.ushort(256) + s.arr(pkg.factory_cert) + s.ushort(1)
    return body + s.arr(k.spki) + s.arr(epki) + s.ushort(1) + s.arr(k.cert)


def _ask(device, body):
    try:
        r = device.call(201, body, "skipImport")
        return ("accepted", r.ushort())
    except s.SksError as e:
        return (e.status, e.message)


def test_padding_oracle_probe_learns_nothing(tmp_path, pki):
    """The attacker holds the genuine package and only public data. The oracle's probe: every
    value of the last byte of container 1's next-to-last ciphertext block (one makes the
    padding valid, the others do not), sent as a whole package and in the former argument
    layout. Each form gets one answer for all 255 forgeries, no decryption is counted, the
    store does not change, and the genuine package still imports."""
    store = st.SkipStore(tmp_path)
    req = store.request("secp256r1", pki[2])
    handle = store.open_skip_sessions()[0].provisioning_handle
    genuine = si.Package.issue(req, pki[1], ["secp256r1", "ed25519"], 256)
    der = genuine.der()
    k = genuine.keys[0]
    at = der.index(k.ciphertext) + len(k.ciphertext) - 17
    before = store.snapshot()
    whole, old = set(), set()
    d = store.device()
    try:
        for v in range(256):
            if v == der[at]:
                continue
            whole.add(_ask(d, s.uint(handle) + s.blob(_flip_at(der, at, v))))
            old.add(_ask(d, _old_layout(handle, genuine, k, _flip_at(k.ciphertext, len(k.ciphertext) - 17, v))))
    finally:
        d.close()
    assert len(whole) == 1, f"forged packages are told apart: {whole}"
    assert len(old) == 1, f"the probe in the former layout is told apart: {old}"
    (status, message), = whole
    assert status == s.ERROR_NOT_ALLOWED and "signature does not verify" in message, message
    assert store.snapshot() == before, "a forged package changed the store"
    assert store.failed_unwraps(handle) == 0, "a package refused by its signature was counted"
    res = store.import_package(store.write("genuine.der", der), pki[2])
    assert "imported 2 keys" in res.stdout.decode()
    assert not store.open_skip_sessions()


def _signed_garbage(pki, req, kind):
    """A package signed by the trusted CA's ephemeral key whose keys do not unwrap."""
    pkg = si.Package.issue(req, pki[1], ["secp256r1"], 256)
    k = pkg.keys[0]
    if kind == "random-ciphertext":
        k.ciphertext = os.urandom(len(k.ciphertext))
    elif kind == "not-pkcs8":
        k.ciphertext = si.aes_cbc_pad(pkg.aes_key, k.iv, os.urandom(45))
    else:  # another key's PKCS#8, well encrypted
        k.ciphertext = si.aes_cbc_pad(pkg.aes_key, k.iv, si.EcKey("secp256r1").pkcs8())
    return pkg.der()


def test_three_verified_packages_that_do_not_unwrap_withdraw_the_request(tmp_path, pki):
    store = st.SkipStore(tmp_path)
    req = store.request("secp256r1", pki[2])
    handle = store.open_skip_sessions()[0].provisioning_handle
    genuine = si.Package.issue(req, pki[1], ["secp256r1"], 256)
    good = genuine.der()
    content = genuine.content()
    at = good.index(content) + len(content) - 3   # in the last container's ciphertext
    tampered = _flip_at(good, at, good[at] ^ 0x01)
    messages = []
    for n, kind in enumerate(["random-ciphertext", "not-pkcs8", "other-key"], 1):
        # A tampered package in transit: refused by its signature, whatever its number, and
        # never counted, through the tool and on the wire alike.
        for _ in range(4):
            res = store.skip_import_on_wire(handle, tampered)
            assert isinstance(res, tuple) and "signature does not verify" in res[1], res
        res = store.import_package(store.write("tampered.der", tampered), pki[2], check=False)
        assert res.returncode != 0 and b"signature does not verify" in res.stderr
        assert store.failed_unwraps(handle) == n - 1
        res = store.skip_import_on_wire(handle, _signed_garbage(pki, req, kind))
        assert isinstance(res, tuple) and res[0] == s.ERROR_CRYPTO, res
        messages.append(res[1].replace(f"package {n} of 3", "package N of 3"))
        if n < 3:
            assert store.failed_unwraps(handle) == n
            assert len(store.open_skip_sessions()) == 1
    assert messages[0] == messages[1], "two unwrap failures are told apart"
    assert "withdrawn" in messages[2]
    assert not store.open_skip_sessions(), "the request survived three packages that did not unwrap"
    assert store.failed_unwraps(handle) is None
    assert store.keys_in_store() == [], "the withdrawn request's factory key is still in the store"
    res = store.import_package(store.write("genuine.der", good), pki[2], check=False)
    assert res.returncode != 0 and b"for another factory key" in res.stderr
    assert isinstance(store.skip_import_on_wire(handle, good), tuple)
    assert store.keys_in_store() == []


def test_two_failures_then_the_genuine_package(tmp_path, pki):
    """Below the limit a request still takes its genuine package."""
    store = st.SkipStore(tmp_path)
    req = store.request("brainpoolP256r1", pki[2])
    handle = store.open_skip_sessions()[0].provisioning_handle
    for kind in ("random-ciphertext", "not-pkcs8"):
        assert isinstance(store.skip_import_on_wire(handle, _signed_garbage(pki, req, kind)), tuple)
    assert store.failed_unwraps(handle) == 2
    genuine = si.Package.issue(req, pki[1], ["ed25519", "brainpoolP256r1"], 128)
    handles = store.skip_import_on_wire(handle, genuine.der())
    assert isinstance(handles, list) and len(handles) == 2, handles
    assert not store.open_skip_sessions()
    assert store.failed_unwraps(handle) is None


@pytest.mark.parametrize("column", ["failed_unwraps", "anchors"])
def test_request_state_edited_in_the_file_is_refused(tmp_path, pki, column):
    """Someone who can write the store file but has no master key resets the strike count (to
    probe again) or swaps the anchors (to have a package of their own CA opened): the device
    refuses the request with an integrity error and decrypts nothing."""
    import sqlite3
    store = st.SkipStore(tmp_path)
    req = store.request("secp256r1", pki[2])
    handle = store.open_skip_sessions()[0].provisioning_handle
    for kind in ("random-ciphertext", "not-pkcs8"):
        assert isinstance(store.skip_import_on_wire(handle, _signed_garbage(pki, req, kind)), tuple)
    assert store.failed_unwraps(handle) == 2
    con = sqlite3.connect(str(store.db), timeout=30)
    if column == "failed_unwraps":
        con.execute("UPDATE skip_requests SET failed_unwraps = 0 WHERE session = ?", (handle,))
    else:
        other = si.Ca("someone else's root")
        con.execute("UPDATE skip_requests SET anchors = ? WHERE session = ?",
                    (s.ushort(1) + s.arr(other.der), handle))
    con.commit()
    con.close()
    res = store.skip_import_on_wire(handle, si.Package.issue(req, pki[1], ["secp256r1"], 256).der())
    assert isinstance(res, tuple) and res[0] == s.ERROR_STORAGE and "integrity error" in res[1], res
    assert [k[2] for k in store.keys_in_store()] == ["factory"], "a key was imported"


FACTORY_ALGORITHMS = [s.SIG_ECDSA_SHA256, s.SIG_ECDSA_SHA384, s.SIG_ECDSA_SHA512, s.SIG_ECDSA_NONE]


def _recovers_package(z, pkg):
    """The review's attack, finished: does Z give the AES key that opens the first container?"""
    aes = si.aes_key_from_z(z, len(pkg.aes_key) * 8)
    k = pkg.keys[0]
    try:
        return aes == pkg.aes_key or si.aes_cbc_pad(aes, k.iv, k.ciphertext, encrypt=False) == k.pkcs8
    except ValueError:
        return False


def _ecdh_with_factory(device, factory, pkg):
    """keyAgreement(factory key, ecdh.raw, the package's ephemeral public key): Z, or the error."""
    try:
        return device.key_agreement(factory, s.KA_ECDH_RAW, pkg.ephemeral.spki())
    except s.SksError as e:
        return e


@pytest.mark.parametrize("curve", ["secp256r1", "brainpoolP320r1"])
def test_factory_key_cannot_unwrap_the_imported_package(tmp_path, pki, curve):
    """After the import, the attacker (any User API client: the factory key has no PIN) holds
    the package, which is public. ECDH between the factory key and the package's ephemeral key
    is refused as an algorithm the key is not endorsed for, before anything is computed; the
    factory key still signs, which is what it is for (it identifies the device to the issuer)."""
    store = st.SkipStore(tmp_path)
    req = store.request(curve, pki[2])
    pkg = si.Package.issue(req, pki[1], ["secp256r1", "ed25519"], 256)
    store.import_package(store.write("package.der", pkg.der()), pki[2])
    factory = store.handle_of(pkg.factory_cert)
    assert factory is not None and store.handle_of(pkg.keys[0].cert) is not None
    d = store.device()
    try:
        res = _ecdh_with_factory(d, factory, pkg)
        assert isinstance(res, s.SksError), \
            f"keyAgreement with the factory key succeeded; the AES key recovered: {_recovers_package(res, pkg)}"
        assert res.status == s.ERROR_ALGORITHM and "not endorsed" in res.message, res
        expect_error(d.asymmetric_key_decrypt, factory, s.ASYM_RSA_PKCS1, bytes(32), codes=(s.ERROR_ALGORITHM,))
        assert d.get_key_attributes(factory).endorsed_algorithms == FACTORY_ALGORITHMS
        if curve == "secp256r1":
            data = bytes(range(32))
            for alg in (s.SIG_ECDSA_SHA256, s.SIG_ECDSA_NONE):
                s.verify_signature(req.spki, alg, data, d.sign_hashed_data(factory, alg, data))
    finally:
        d.close()
    # ... and through OpenSSL: the factory key signs via the provider, verified by its certificate.
    if curve == "secp256r1":
        store.sign_and_verify(factory, pkg.factory_cert, "secp256r1")


def test_factory_key_unusable_while_the_request_is_pending(tmp_path, pki):
    """Before the import the factory key belongs to the open SKIP session: the User API does not
    reach it at all, so the package a request is waiting for cannot be opened with it either."""
    import sqlite3
    store = st.SkipStore(tmp_path)
    req = store.request("secp256r1", pki[2])
    pkg = si.Package.issue(req, pki[1], ["secp256r1"], 256)
    con = sqlite3.connect(f"file:{store.db}?mode=ro", uri=True)
    try:
        (factory,) = con.execute("SELECT handle FROM keys WHERE id = 'factory'").fetchone()
    finally:
        con.close()
    d = store.device()
    try:
        res = _ecdh_with_factory(d, factory, pkg)
        assert isinstance(res, s.SksError), \
            f"keyAgreement with a pending factory key succeeded; AES key recovered: {_recovers_package(res, pkg)}"
        assert res.status == s.ERROR_NO_KEY and "still being provisioned" in res.message, res
        res = expect_error(d.sign_hashed_data, factory, s.SIG_ECDSA_SHA256, bytes(32), codes=(s.ERROR_NO_KEY,))
    finally:
        d.close()
    assert store.open_skip_sessions(), "the request must still be pending"
    store.import_package(store.write("package.der", pkg.der()), pki[2])
