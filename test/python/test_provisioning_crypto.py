"""User API cryptography checked against `cryptography`: symmetric keys (HMAC, AES in the
internal-IV, explicit-IV and ECB modes) and asymmetric keys (ECDSA, RSA PKCS#1 v1.5, raw
PKCS#1, PSS, RSA decryption, ECDH)."""

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import sksissuer as s
from skshelpers import expect_error, sha256, sign_and_verify

MESSAGE = b"The quick brown fox jumps over the lazy dog, 0123456789!"


def symmetric_key(new_issuer, secret, **kw):
    iss = new_issuer()
    key = iss.provision_key(**kw)
    iss.import_symmetric_key(key, secret)
    iss.close()
    return key


# ---------------------------------------------------------------------------------------------
# Symmetric keys
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [20, 32, 64, 128])
def test_hmac(new_issuer, device, length):
    secret = os.urandom(length)
    key = symmetric_key(new_issuer, secret)
    attrs = device.get_key_attributes(key.handle)
    assert attrs.symmetric_key_length == length
    for alg in (s.HMAC_SHA1, s.HMAC_SHA256, s.HMAC_SHA384, s.HMAC_SHA512):
        for data in (b"", MESSAGE, os.urandom(5000)):
            assert device.perform_hmac(key.handle, alg, data) == \
                s.reference_hmac(alg, secret, data), f"{alg} over {len(data)} bytes"


def test_symmetric_key_too_long_rejected(new_issuer, device):
    iss = new_issuer()
    key = iss.provision_key()
    expect_error(iss.import_symmetric_key, key, b"\x01" * 129)
    from skshelpers import assert_no_trace
    assert_no_trace(device, iss, [key.handle])


@pytest.mark.parametrize("alg,length", [(s.ENC_AES128_CBC, 16), (s.ENC_AES192_CBC, 24),
                                        (s.ENC_AES256_CBC, 32)])
def test_aes_internal_iv(new_issuer, device, alg, length):
    secret = os.urandom(length)
    key = symmetric_key(new_issuer, secret)
    for data in (b"", b"x", MESSAGE, b"\x10" * 32):
        out = device.symmetric_key_encrypt(key.handle, alg, True, data)
        assert len(out) == 16 + (len(data) // 16 + 1) * 16, "IV || PKCS#7-padded ciphertext"
        assert s.aes_cbc_pkcs7(secret, out[:16], out[16:], False) == data
        again = device.symmetric_key_encrypt(key.handle, alg, True, data)
        assert again[:16] != out[:16], "the IV must be freshly generated"
    iv = os.urandom(16)
    ct = iv + s.aes_cbc_pkcs7(secret, iv, MESSAGE, True)
    assert device.symmetric_key_encrypt(key.handle, alg, False, ct) == MESSAGE
    # the IV is internal: parameters are not allowed
    expect_error(device.symmetric_key_encrypt, key.handle, alg, True, MESSAGE, parameters=iv)
    # a key of another length does not fit the algorithm
    other = {16: s.ENC_AES256_CBC, 24: s.ENC_AES128_CBC, 32: s.ENC_AES192_CBC}[length]
    expect_error(device.symmetric_key_encrypt, key.handle, other, True, MESSAGE)


@pytest.mark.parametrize("length", [16, 24, 32])
def test_aes_cbc_explicit_iv(new_issuer, device, length):
    secret = os.urandom(length)
    key = symmetric_key(new_issuer, secret)
    iv = os.urandom(16)
    for data in (b"", b"Success or not?", MESSAGE):
        out = device.symmetric_key_encrypt(key.handle, s.ENC_AES_CBC, True, data, parameters=iv)
        assert out == s.aes_cbc_pkcs7(secret, iv, data, True)
        assert device.symmetric_key_encrypt(key.handle, s.ENC_AES_CBC, False, out,
                                            parameters=iv) == data
    expect_error(device.symmetric_key_encrypt, key.handle, s.ENC_AES_CBC, True, MESSAGE)
    expect_error(device.symmetric_key_encrypt, key.handle, s.ENC_AES_CBC, True, MESSAGE,
                 parameters=iv[:8])
    expect_error(device.symmetric_key_encrypt, key.handle, s.ENC_AES_CBC, False, b"\x00" * 15,
                 parameters=iv)


@pytest.mark.parametrize("length", [16, 24, 32])
def test_aes_ecb_nopad(new_issuer, device, length):
    secret = os.urandom(length)
    key = symmetric_key(new_issuer, secret)
    data = os.urandom(64)
    out = device.symmetric_key_encrypt(key.handle, s.ENC_AES_ECB_NOPAD, True, data)
    assert out == s.aes_ecb(secret, data, True)
    assert device.symmetric_key_encrypt(key.handle, s.ENC_AES_ECB_NOPAD, False, out) == data
    expect_error(device.symmetric_key_encrypt, key.handle, s.ENC_AES_ECB_NOPAD, True, data[:20])
    expect_error(device.symmetric_key_encrypt, key.handle, s.ENC_AES_ECB_NOPAD, True, data,
                 parameters=os.urandom(16))


def test_symmetric_key_disables_private_key(new_issuer, device):
    key = symmetric_key(new_issuer, os.urandom(32))
    expect_error(device.sign_hashed_data, key.handle, s.SIG_ECDSA_SHA256, sha256(b"x"),
                 codes=(s.ERROR_ALGORITHM,))
    peer, _ = s.ecdh_peer(key.public_key)
    expect_error(device.key_agreement, key.handle, s.KA_ECDH_RAW, peer,
                 codes=(s.ERROR_ALGORITHM,))


def test_symmetric_operations_on_asymmetric_key_rejected(new_issuer, device):
    iss = new_issuer()
    key = iss.provision_key()
    iss.close()
    expect_error(device.perform_hmac, key.handle, s.HMAC_SHA256, b"x", codes=(s.ERROR_ALGORITHM,))
    expect_error(device.symmetric_key_encrypt, key.handle, s.ENC_AES256_CBC, True, b"x",
                 codes=(s.ERROR_ALGORITHM,))


def test_symmetric_key_with_pin(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy()
    key = iss.provision_key(pin_policy=policy, pin="2580")
    secret = os.urandom(32)
    iss.import_symmetric_key(key, secret)
    iss.close()
    expect_error(device.perform_hmac, key.handle, s.HMAC_SHA256, b"x", authorization=b"1111",
                 codes=(s.ERROR_AUTHORIZATION,))
    expect_error(device.perform_hmac, key.handle, s.HMAC_SHA256, b"x",
                 codes=(s.ERROR_AUTHORIZATION,))
    assert device.perform_hmac(key.handle, s.HMAC_SHA256, b"x", authorization=b"2580") == \
        s.reference_hmac(s.HMAC_SHA256, secret, b"x")
    out = device.symmetric_key_encrypt(key.handle, s.ENC_AES_ECB_NOPAD, True, b"\x00" * 16,
                                       authorization=b"2580")
    assert out == s.aes_ecb(secret, b"\x00" * 16, True)


def test_crypto_data_size_limit(new_issuer, device):
    limit = device.device_info().crypto_data_size
    key = symmetric_key(new_issuer, os.urandom(32))
    data = os.urandom(limit - limit % 16)
    assert device.perform_hmac(key.handle, s.HMAC_SHA256, data) == \
        s.reference_hmac(s.HMAC_SHA256, key.symmetric_key, data)
    expect_error(device.perform_hmac, key.handle, s.HMAC_SHA256, data + os.urandom(64))


# ---------------------------------------------------------------------------------------------
# Asymmetric keys
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key_algorithm", [s.KEY_EC_P256, s.KEY_EC_P384, s.KEY_EC_P521])
def test_ecdsa(new_issuer, device, key_algorithm):
    iss = new_issuer()
    key = iss.provision_key(key_algorithm)
    iss.close()
    for alg in (s.SIG_ECDSA_SHA256, s.SIG_ECDSA_SHA384, s.SIG_ECDSA_SHA512):
        sig = sign_and_verify(device, key, alg)
        field = (s.load_public_key(key.public_key).bits + 7) // 8
        assert len(sig) == 2 * field
    for digest in (sha256(b"none"), sha256(b"short")[:20]):
        sign_and_verify(device, key, s.SIG_ECDSA_NONE, data=digest)
    # signatures are randomized
    d = sha256(MESSAGE)
    assert device.sign_hashed_data(key.handle, s.SIG_ECDSA_SHA256, d) != \
        device.sign_hashed_data(key.handle, s.SIG_ECDSA_SHA256, d)
    # data must have the hash length
    for bad in (d[:31], d + b"\x00"):
        expect_error(device.sign_hashed_data, key.handle, s.SIG_ECDSA_SHA256, bad)
    expect_error(device.sign_hashed_data, key.handle, s.SIG_ECDSA_SHA512, d)
    # RSA algorithms do not apply to EC keys
    expect_error(device.sign_hashed_data, key.handle, s.SIG_RSA_SHA256, d,
                 codes=(s.ERROR_ALGORITHM,))
    expect_error(device.asymmetric_key_decrypt, key.handle, s.ASYM_RSA_PKCS1, b"\x00" * 64,
                 codes=(s.ERROR_ALGORITHM,))


def test_rsa_signatures(new_issuer, device):
    iss = new_issuer()
    key = iss.provision_key(s.KEY_RSA2048)
    iss.close()
    for alg in (s.SIG_RSA_SHA256, s.SIG_RSA_SHA384, s.SIG_RSA_SHA512, s.SIG_RSA_PSS_SHA256,
                s.SIG_RSA_PSS_SHA384, s.SIG_RSA_PSS_SHA512):
        sign_and_verify(device, key, alg)
    d = sha256(MESSAGE)
    # PKCS#1 v1.5 is deterministic; PSS is randomized
    assert device.sign_hashed_data(key.handle, s.SIG_RSA_SHA256, d) == \
        device.sign_hashed_data(key.handle, s.SIG_RSA_SHA256, d)
    assert device.sign_hashed_data(key.handle, s.SIG_RSA_PSS_SHA256, d) != \
        device.sign_hashed_data(key.handle, s.SIG_RSA_PSS_SHA256, d)
    # rsa.pkcs1.none: EMSA = 00 01 PS 00 data, data as given (here a SHA-256 DigestInfo)
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + d
    for data in (digest_info, d, b"\x00" * 40):
        sign_and_verify(device, key, s.SIG_RSA_NONE, data=data)
    expect_error(device.sign_hashed_data, key.handle, s.SIG_RSA_NONE, b"\x01" * 250)
    expect_error(device.sign_hashed_data, key.handle, s.SIG_RSA_SHA256, d[:20])
    expect_error(device.sign_hashed_data, key.handle, s.SIG_ECDSA_SHA256, d,
                 codes=(s.ERROR_ALGORITHM,))


@pytest.mark.parametrize("alg", [s.ASYM_RSA_PKCS1, s.ASYM_RSA_OAEP_SHA1, s.ASYM_RSA_OAEP_SHA256])
def test_rsa_decrypt(new_issuer, device, alg):
    iss = new_issuer()
    key = iss.provision_key(s.KEY_RSA2048)
    iss.close()
    for secret in (b"k", os.urandom(32), os.urandom(150)):
        ct = s.rsa_encrypt(key.public_key, alg, secret)
        assert device.asymmetric_key_decrypt(key.handle, alg, ct) == secret
    other = {s.ASYM_RSA_PKCS1: s.ASYM_RSA_OAEP_SHA256, s.ASYM_RSA_OAEP_SHA1: s.ASYM_RSA_OAEP_SHA256,
             s.ASYM_RSA_OAEP_SHA256: s.ASYM_RSA_OAEP_SHA1}[alg]
    ct = s.rsa_encrypt(key.public_key, other, b"padding mismatch")
    try:
        out = device.asymmetric_key_decrypt(key.handle, alg, ct)
    except s.SksError:
        pass
    else:
        assert out != b"padding mismatch"
    expect_error(device.asymmetric_key_decrypt, key.handle, alg, b"\x01" * 300)


@pytest.mark.parametrize("oaep_digest,mgf1_digest,label", [
    ("SHA256", "SHA1", b""),                    # Java's OAEPWithSHA-256AndMGF1Padding
    ("SHA256", "SHA1", b"a label for this key"),
    ("SHA1", "SHA512", b"\x00\x01\x02"),
    ("SHA224", "SHA384", b"l"),
    ("SHA512", "SHA224", b""),
    ("SHA384", "SHA384", b"x" * 300),
])
def test_rsa_oaep_with_parameters(new_issuer, device, oaep_digest, mgf1_digest, label):
    """rsa.oaep: the OAEP digest, the MGF1 digest and the label travel in "parameters"; the
    ciphertext is made by `cryptography`."""
    iss = new_issuer()
    key = iss.provision_key(s.KEY_RSA2048)
    iss.close()
    params = s.oaep_parameters(oaep_digest, mgf1_digest, label)
    for secret in (b"k", os.urandom(32)):
        ct = s.rsa_encrypt_oaep(key.public_key, oaep_digest, mgf1_digest, label, secret)
        assert device.asymmetric_key_decrypt(key.handle, s.ASYM_RSA_OAEP, ct, parameters=params) == secret


def test_rsa_oaep_label_and_mgf1_mismatch_are_the_uniform_failure(new_issuer, device):
    """A wrong label, a mismatched MGF1 digest, a mismatched OAEP digest and a tampered
    ciphertext all give one status and one message (no oracle telling them apart)."""
    iss = new_issuer()
    key = iss.provision_key(s.KEY_RSA2048)
    iss.close()
    label = b"the right label"
    ct = s.rsa_encrypt_oaep(key.public_key, "SHA256", "SHA1", label, b"attack at dawn")
    right = s.oaep_parameters("SHA256", "SHA1", label)
    assert device.asymmetric_key_decrypt(key.handle, s.ASYM_RSA_OAEP, ct, parameters=right) == b"attack at dawn"
    tampered = bytearray(ct)
    tampered[100] ^= 0x80
    attempts = {
        "wrong label": (ct, s.oaep_parameters("SHA256", "SHA1", b"the wrong label")),
        "no label": (ct, s.oaep_parameters("SHA256", "SHA1")),
        "mismatched MGF1": (ct, s.oaep_parameters("SHA256", "SHA256", label)),
        "mismatched OAEP digest": (ct, s.oaep_parameters("SHA384", "SHA1", label)),
        "tampered ciphertext": (bytes(tampered), right),
        "short ciphertext": (ct[:-1], right),
    }
    answers = set()
    for what, (data, params) in attempts.items():
        e = expect_error(device.asymmetric_key_decrypt, key.handle, s.ASYM_RSA_OAEP, data,
                         parameters=params, codes=(s.ERROR_CRYPTO,))
        answers.add((e.status, e.message))
    assert answers == {(s.ERROR_CRYPTO, f"asymmetricKeyDecrypt: decryption with key #{key.handle} failed")}, answers


@pytest.mark.parametrize("params", [
    b"",                                                       # parameters are required
    s.oaep_parameters("SHA256", "SHA1")[:-1],                  # truncated
    s.oaep_parameters("SHA256", "SHA1") + b"\x00",             # trailing byte
    s.oaep_parameters("sha256", "SHA1"),                       # names are exact
    s.oaep_parameters("SHA256", "MD5"),
    s.oaep_parameters("SHA3-256", "SHA256"),
], ids=["empty", "truncated", "trailing", "lowercase", "md5-mgf1", "sha3"])
def test_rsa_oaep_malformed_parameters_refused(new_issuer, device, params):
    iss = new_issuer()
    key = iss.provision_key(s.KEY_RSA1024)
    iss.close()
    ct = s.rsa_encrypt_oaep(key.public_key, "SHA256", "SHA1", b"", b"x")
    expect_error(device.asymmetric_key_decrypt, key.handle, s.ASYM_RSA_OAEP, ct, parameters=params,
                 codes=(s.ERROR_OPTION,))
    # the specification's OAEP URIs take no parameters
    expect_error(device.asymmetric_key_decrypt, key.handle, s.ASYM_RSA_OAEP_SHA256, ct,
                 parameters=s.oaep_parameters("SHA256", "SHA256"), codes=(s.ERROR_OPTION,))


def test_rsa_oaep_endorsement_is_by_uri(new_issuer, device):
    """A key endorsed for rsa.oaep.sha256 does not do rsa.oaep (not even with the same
    digests): the endorsement names one scheme. A key endorsed for rsa.oaep does every OAEP
    variant through it, but not the specification's URIs."""
    iss = new_issuer()
    spec = iss.provision_key(s.KEY_RSA1024, endorsed_algorithms=[s.ASYM_RSA_OAEP_SHA256])
    generic = iss.provision_key(s.KEY_RSA1024, endorsed_algorithms=[s.ASYM_RSA_OAEP])
    iss.close()
    same = s.oaep_parameters("SHA256", "SHA256")
    ct = s.rsa_encrypt_oaep(spec.public_key, "SHA256", "SHA256", b"", b"spec")
    assert device.asymmetric_key_decrypt(spec.handle, s.ASYM_RSA_OAEP_SHA256, ct) == b"spec"
    expect_error(device.asymmetric_key_decrypt, spec.handle, s.ASYM_RSA_OAEP, ct, parameters=same,
                 codes=(s.ERROR_ALGORITHM,))
    ct = s.rsa_encrypt_oaep(generic.public_key, "SHA256", "SHA256", b"", b"generic")
    assert device.asymmetric_key_decrypt(generic.handle, s.ASYM_RSA_OAEP, ct, parameters=same) == b"generic"
    expect_error(device.asymmetric_key_decrypt, generic.handle, s.ASYM_RSA_OAEP_SHA256, ct,
                 codes=(s.ERROR_ALGORITHM,))


@pytest.mark.parametrize("key_algorithm", [s.KEY_EC_P256, s.KEY_EC_P384, s.KEY_EC_P521,
                                           s.KEY_BP256])
def test_ecdh_raw(new_issuer, device, key_algorithm):
    iss = new_issuer()
    key = iss.provision_key(key_algorithm)
    iss.close()
    for _ in range(2):
        peer, z = s.ecdh_peer(key.public_key)
        assert device.key_agreement(key.handle, s.KA_ECDH_RAW, peer) == z
    curve = ec.SECP384R1() if key_algorithm != s.KEY_EC_P384 else ec.SECP256R1()
    wrong = s.spki(ec.generate_private_key(curve).public_key())
    expect_error(device.key_agreement, key.handle, s.KA_ECDH_RAW, wrong)
    expect_error(device.key_agreement, key.handle, s.KA_ECDH_RAW, b"\x30\x03\x02\x01\x01")
    expect_error(device.key_agreement, key.handle, s.SKS + "ecdh.kdf", peer,
                 codes=(s.ERROR_ALGORITHM,))


def test_ecdh_on_rsa_key_rejected(new_issuer, device):
    iss = new_issuer()
    key = iss.provision_key(s.KEY_RSA1024)
    iss.close()
    peer = s.spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    expect_error(device.key_agreement, key.handle, s.KA_ECDH_RAW, peer,
                 codes=(s.ERROR_ALGORITHM,))


def test_unknown_algorithm_rejected(new_issuer, device):
    iss = new_issuer()
    key = iss.provision_key()
    iss.close()
    expect_error(device.sign_hashed_data, key.handle, s.SKS + "ecdsa.sha3", sha256(b"x"),
                 codes=(s.ERROR_ALGORITHM,))


def test_user_api_refuses_keys_of_open_sessions(new_issuer, device):
    """Keys must not be used before their session is closed; the failed User API call does
    not affect the open session."""
    iss = new_issuer()
    key = iss.provision_key()
    expect_error(device.sign_hashed_data, key.handle, s.SIG_ECDSA_SHA256, sha256(b"x"))
    iss.close()
    sign_and_verify(device, key)


def test_parameters_and_biometrics_rejected(new_issuer, device):
    """parameters must be empty for algorithms without parameters; biometricAuth on a key
    without biometric protection is an authorization error."""
    iss = new_issuer()
    ec_key = iss.provision_key()
    rsa_key = iss.provision_key(s.KEY_RSA1024)
    iss.close()
    d = sha256(b"x")
    expect_error(device.sign_hashed_data, ec_key.handle, s.SIG_ECDSA_SHA256, d,
                 parameters=b"\x00")
    peer, _ = s.ecdh_peer(ec_key.public_key)
    expect_error(device.key_agreement, ec_key.handle, s.KA_ECDH_RAW, peer, parameters=b"\x00")
    ct = s.rsa_encrypt(rsa_key.public_key, s.ASYM_RSA_PKCS1, b"x")
    expect_error(device.asymmetric_key_decrypt, rsa_key.handle, s.ASYM_RSA_PKCS1, ct,
                 parameters=b"\x00")
    expect_error(device.sign_hashed_data, ec_key.handle, s.SIG_ECDSA_SHA256, d,
                 biometric_auth=True, codes=(s.ERROR_AUTHORIZATION,))
    sign_and_verify(device, ec_key)


def test_unknown_key_handle(device):
    expect_error(device.sign_hashed_data, 0x7FFFFFF0, s.SIG_ECDSA_SHA256, sha256(b"x"),
                 codes=(s.ERROR_NO_KEY,))
    for fn in (device.get_key_attributes, device.get_key_protection_info):
        expect_error(fn, 0x7FFFFFF0, codes=(s.ERROR_NO_KEY,))
    expect_error(device.export_key, 0x7FFFFFF0, codes=(s.ERROR_NO_KEY,))
    expect_error(device.delete_key, 0x7FFFFFF0, codes=(s.ERROR_NO_KEY,))
