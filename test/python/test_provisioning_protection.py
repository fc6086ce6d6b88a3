"""Export and delete protection, keyBackup flags, and endorsed algorithms (declared at
createKeyEntry, checked against the key material at close, enforced by the User API)."""

import pytest
from cryptography.hazmat.primitives import serialization

import sksissuer as s
from skshelpers import (assert_key_gone, assert_no_trace, expect_error, find_session,
                        protection, sha256, sign_and_verify)

PIN = b"2580"
PUK = b"12345678"


def protected_key(new_issuer, *, export=s.PROTECTION_NONE, delete=s.PROTECTION_NONE,
                  key_algorithm=s.KEY_EC_P256):
    iss = new_issuer()
    puk = iss.create_puk_policy(PUK)
    policy = iss.create_pin_policy(puk=puk, retry_limit=3)
    key = iss.provision_key(key_algorithm, pin_policy=policy, pin=PIN, export_protection=export,
                            delete_protection=delete)
    iss.close()
    return iss, key


def check_exported_private_key(der, key):
    priv = serialization.load_der_private_key(der, None)
    assert s.spki(priv.public_key()) == key.public_key, "exported key does not match"


@pytest.mark.parametrize("export,good,bad", [
    (s.PROTECTION_NONE, b"", None),
    (s.PROTECTION_PIN, PIN, b"0000"),
    (s.PROTECTION_PUK, PUK, b"00000000"),
], ids=["none", "pin", "puk"])
def test_export_protection(new_issuer, device, export, good, bad):
    _, key = protected_key(new_issuer, export=export)
    assert protection(device, key).key_backup == 0
    if bad is not None:
        expect_error(device.export_key, key.handle, bad, codes=(s.ERROR_AUTHORIZATION,))
        info = protection(device, key)
        assert (info.pin_error_count, info.puk_error_count) == \
            ((1, 0) if export == s.PROTECTION_PIN else (0, 1))
        assert info.key_backup == 0, "a failed export is no export"
    check_exported_private_key(device.export_key(key.handle, good), key)
    info = protection(device, key)
    assert info.key_backup == s.KEYBACKUP_EXPORTED
    assert info.export_protection == export


def test_non_exportable(new_issuer, device):
    _, key = protected_key(new_issuer, export=s.PROTECTION_NOT_ALLOWED)
    expect_error(device.export_key, key.handle, b"", codes=(s.ERROR_NOT_ALLOWED,))
    expect_error(device.export_key, key.handle, PIN, codes=(s.ERROR_NOT_ALLOWED,))
    expect_error(device.export_key, key.handle, PUK, codes=(s.ERROR_NOT_ALLOWED,))
    assert protection(device, key).key_backup == 0


@pytest.mark.parametrize("delete,good,bad", [
    (s.PROTECTION_NONE, b"", None),
    (s.PROTECTION_PIN, PIN, b"0000"),
    (s.PROTECTION_PUK, PUK, b"00000000"),
], ids=["none", "pin", "puk"])
def test_delete_protection(new_issuer, device, delete, good, bad):
    iss, key = protected_key(new_issuer, delete=delete)
    if bad is not None:
        expect_error(device.delete_key, key.handle, bad, codes=(s.ERROR_AUTHORIZATION,))
        assert device.get_key_attributes(key.handle).certificate_path == key.certificate_path
    device.delete_key(key.handle, good)
    assert_key_gone(device, key.handle)
    sess, _ = find_session(device, iss.handle)
    assert sess is None, "deleting the last key of a session removes the session"


def test_non_deletable(new_issuer, device):
    _, key = protected_key(new_issuer, delete=s.PROTECTION_NOT_ALLOWED)
    for auth in (b"", PIN, PUK):
        expect_error(device.delete_key, key.handle, auth, codes=(s.ERROR_NOT_ALLOWED,))
    sign_and_verify(device, key, pin=PIN)


def test_delete_keeps_other_keys_and_session(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy(grouping=s.GROUPING_SHARED)
    a = iss.provision_key(pin_policy=policy, pin=PIN)
    b = iss.provision_key(pin_policy=policy, pin=PIN)
    iss.close()
    device.delete_key(a.handle)
    assert device.list_keys() == {b.handle: iss.handle}
    sign_and_verify(device, b, pin=PIN)
    assert protection(device, b).protection_status & s.PROTSTAT_PIN_PROTECTED
    device.delete_key(b.handle)
    assert device.list_keys() == {}
    assert device.all_sessions() == []


@pytest.mark.parametrize("kw", [
    dict(export_protection=s.PROTECTION_PIN), dict(delete_protection=s.PROTECTION_PIN),
    dict(export_protection=s.PROTECTION_PUK), dict(delete_protection=s.PROTECTION_PUK),
    dict(export_protection=4), dict(delete_protection=4), dict(app_usage=4),
    dict(biometric_protection=4),
], ids=["export-pin-nopin", "delete-pin-nopin", "export-puk-nopuk", "delete-puk-nopuk",
        "export4", "delete4", "appusage4", "biometric4"])
def test_protection_needs_protection_objects(new_issuer, device, kw):
    iss = new_issuer()
    expect_error(iss.create_key_entry, **kw)
    assert_no_trace(device, iss)


def test_puk_protection_needs_puk_object(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy()
    expect_error(iss.create_key_entry, pin_policy=policy, pin=PIN,
                 export_protection=s.PROTECTION_PUK)
    assert_no_trace(device, iss)


def test_key_backup_flags(new_issuer, device):
    iss = new_issuer()
    sym = iss.provision_key()
    iss.import_symmetric_key(sym, b"\x11" * 32)
    gen = iss.provision_key()
    iss.close()
    assert protection(device, sym).key_backup == s.KEYBACKUP_IMPORTED
    assert protection(device, gen).key_backup == 0
    assert device.export_key(sym.handle) == b"\x11" * 32
    assert protection(device, sym).key_backup == s.KEYBACKUP_IMPORTED | s.KEYBACKUP_EXPORTED
    check_exported_private_key(device.export_key(gen.handle), gen)
    assert protection(device, gen).key_backup == s.KEYBACKUP_EXPORTED


def test_export_rsa_key(new_issuer, device):
    iss = new_issuer()
    key = iss.provision_key(s.KEY_RSA1024)
    iss.close()
    check_exported_private_key(device.export_key(key.handle), key)


# ---------------------------------------------------------------------------------------------
# Endorsed algorithms
# ---------------------------------------------------------------------------------------------

def test_endorsed_signature_algorithm_enforced(new_issuer, device):
    iss = new_issuer()
    key = iss.provision_key(s.KEY_EC_P256, endorsed_algorithms=[s.SIG_ECDSA_SHA256])
    rsa_key = iss.provision_key(s.KEY_RSA1024,
                                endorsed_algorithms=sorted([s.SIG_RSA_SHA256,
                                                            s.ASYM_RSA_OAEP_SHA256]))
    iss.close()
    assert device.get_key_attributes(key.handle).endorsed_algorithms == [s.SIG_ECDSA_SHA256]
    sign_and_verify(device, key, s.SIG_ECDSA_SHA256)
    for alg, data in ((s.SIG_ECDSA_SHA384, sha256(b"x") + sha256(b"y")[:16]),
                      (s.SIG_ECDSA_NONE, sha256(b"x"))):
        expect_error(device.sign_hashed_data, key.handle, alg, data, codes=(s.ERROR_ALGORITHM,))
    peer, _ = s.ecdh_peer(key.public_key)
    expect_error(device.key_agreement, key.handle, s.KA_ECDH_RAW, peer,
                 codes=(s.ERROR_ALGORITHM,))
    sign_and_verify(device, rsa_key, s.SIG_RSA_SHA256)
    ct = s.rsa_encrypt(rsa_key.public_key, s.ASYM_RSA_OAEP_SHA256, b"ok")
    assert device.asymmetric_key_decrypt(rsa_key.handle, s.ASYM_RSA_OAEP_SHA256, ct) == b"ok"
    ct = s.rsa_encrypt(rsa_key.public_key, s.ASYM_RSA_PKCS1, b"no")
    expect_error(device.asymmetric_key_decrypt, rsa_key.handle, s.ASYM_RSA_PKCS1, ct,
                 codes=(s.ERROR_ALGORITHM,))
    expect_error(device.sign_hashed_data, rsa_key.handle, s.SIG_RSA_SHA512,
                 sha256(b"a") + sha256(b"b"), codes=(s.ERROR_ALGORITHM,))


def test_endorsed_symmetric_algorithms_enforced(new_issuer, device):
    iss = new_issuer()
    key = iss.provision_key(endorsed_algorithms=[s.HMAC_SHA256])
    iss.import_symmetric_key(key, b"\x22" * 32)
    iss.close()
    assert device.perform_hmac(key.handle, s.HMAC_SHA256, b"data") == \
        s.reference_hmac(s.HMAC_SHA256, b"\x22" * 32, b"data")
    expect_error(device.perform_hmac, key.handle, s.HMAC_SHA512, b"data",
                 codes=(s.ERROR_ALGORITHM,))
    expect_error(device.symmetric_key_encrypt, key.handle, s.ENC_AES256_CBC, True, b"data",
                 codes=(s.ERROR_ALGORITHM,))


def test_endorsed_none_disables_user_api(new_issuer, device):
    """The "none" algorithm: no cryptographic User API operation, but a password-store key
    can still be exported."""
    iss = new_issuer()
    sym = iss.provision_key(endorsed_algorithms=[s.ALG_NONE])
    iss.import_symmetric_key(sym, b"my secret password")
    asym = iss.provision_key(endorsed_algorithms=[s.ALG_NONE])
    iss.close()
    expect_error(device.perform_hmac, sym.handle, s.HMAC_SHA256, b"x")
    expect_error(device.sign_hashed_data, asym.handle, s.SIG_ECDSA_SHA256, sha256(b"x"))
    peer, _ = s.ecdh_peer(asym.public_key)
    expect_error(device.key_agreement, asym.handle, s.KA_ECDH_RAW, peer)
    assert device.export_key(sym.handle) == b"my secret password"
    assert device.get_key_attributes(sym.handle).endorsed_algorithms == [s.ALG_NONE]


@pytest.mark.parametrize("endorsed", [
    [s.SIG_ECDSA_SHA384, s.SIG_ECDSA_SHA256],               # not sorted
    [s.SIG_ECDSA_SHA256, s.SIG_ECDSA_SHA256],               # duplicate
    sorted([s.ALG_NONE, s.SIG_ECDSA_SHA256]),               # none must be alone
    [s.SKS + "no.such.algorithm"],
    [s.KEY_EC_P256],                                        # key generation, not usage
    [s.ALG_SESSION_1],
], ids=["unsorted", "duplicate", "none-not-alone", "unknown", "keygen-uri", "session-uri"])
def test_bad_endorsed_lists_abort(new_issuer, device, endorsed):
    iss = new_issuer()
    good = iss.create_key_entry()
    expect_error(iss.create_key_entry, endorsed_algorithms=endorsed)
    assert_no_trace(device, iss, [good.handle])


@pytest.mark.parametrize("key_algorithm,endorsed,symmetric", [
    (s.KEY_EC_P256, [s.SIG_RSA_SHA256], None),
    (s.KEY_RSA1024, [s.SIG_ECDSA_SHA256], None),
    (s.KEY_EC_P256, [s.HMAC_SHA256], None),                 # symmetric alg, asymmetric key
    (s.KEY_EC_P256, [s.SIG_ECDSA_SHA256], b"\x01" * 32),    # asymmetric alg, symmetric key
    (s.KEY_EC_P256, [s.ENC_AES256_CBC], b"\x01" * 16),      # wrong AES key length
    (s.KEY_EC_P256, [s.ENC_AES128_CBC], b"\x01" * 20),
], ids=["rsa-alg-on-ec", "ec-alg-on-rsa", "hmac-on-ec", "ecdsa-on-symmetric",
        "aes256-on-16", "aes128-on-20"])
def test_endorsed_algorithms_checked_at_close(new_issuer, device, key_algorithm, endorsed,
                                              symmetric):
    """createKeyEntry must not check the algorithms against the key; close must."""
    iss = new_issuer()
    key = iss.provision_key(key_algorithm, endorsed_algorithms=endorsed)
    if symmetric is not None:
        iss.import_symmetric_key(key, symmetric)
    expect_error(iss.close)
    assert_no_trace(device, iss, [key.handle])


def test_endorsed_matching_at_close(new_issuer, device):
    iss = new_issuer()
    k1 = iss.provision_key(endorsed_algorithms=[s.ENC_AES128_CBC])
    iss.import_symmetric_key(k1, b"\x01" * 16)
    k2 = iss.provision_key(endorsed_algorithms=sorted([s.ENC_AES_CBC, s.HMAC_SHA1]))
    iss.import_symmetric_key(k2, b"\x01" * 24)
    k3 = iss.provision_key(s.KEY_ED25519, endorsed_algorithms=[s.SIG_ED25519])
    iss.close()
    sign_and_verify(device, k3, s.SIG_ED25519)
    expect_error(device.symmetric_key_encrypt, k2.handle, s.ENC_AES192_CBC, True, b"abc",
                 codes=(s.ERROR_ALGORITHM,))
