"""Every key algorithm: generation, attestation, strict public key encoding, certification
and use through the User API, verified with `cryptography` (brainpoolP320r1 in pure Python).

RSA-4096 key generation is slow, so it runs once (rsa4096.exp, which checks both the size
and the exponent); plain rsa4096 is covered by the supportedAlgorithm list and by the
keyParameters rejection tests below."""

import pytest

import sksissuer as s
from skshelpers import assert_no_trace, expect_error, sha256, sign_and_verify

E_1024 = (65539).to_bytes(3, "big")
E_2048 = (2 ** 32 + 1).to_bytes(5, "big")
E_3072 = (2 ** 24 + 1).to_bytes(4, "big")
E_4096 = (65541).to_bytes(3, "big")

KEY_CASES = [
    (s.KEY_RSA1024, b""),
    (s.KEY_RSA2048, b""),
    (s.KEY_RSA3072, b""),
    (s.KEY_RSA1024_EXP, E_1024),
    (s.KEY_RSA2048_EXP, E_2048),
    (s.KEY_RSA3072_EXP, E_3072),
    (s.KEY_RSA4096_EXP, E_4096),
    (s.KEY_EC_P256, b""),
    (s.KEY_EC_P384, b""),
    (s.KEY_EC_P521, b""),
    (s.KEY_BP256, b""),
    (s.KEY_BP320, b""),
    (s.KEY_BP384, b""),
    (s.KEY_BP512, b""),
    (s.KEY_ED25519, b""),
]


@pytest.mark.parametrize("key_algorithm,key_parameters", KEY_CASES,
                         ids=[c[0].split("#")[1] for c in KEY_CASES])
def test_key_algorithm(new_issuer, device, key_algorithm, key_parameters):
    iss = new_issuer()
    key = iss.create_key_entry(key_algorithm, key_parameters=key_parameters,
                               friendly_name=key_algorithm.split("#")[1])
    # create_key_entry verified the key.1 attestation and that the SPKI is strict and matches
    # the requested algorithm (size, exponent, curve)
    info = s.check_public_key(key.public_key, key_algorithm, key_parameters)
    iss.set_certificate_path(key)
    iss.close()
    attrs = device.get_key_attributes(key.handle)
    assert attrs.certificate_path == key.certificate_path
    assert attrs.symmetric_key_length == 0
    if info.kind == "rsa":
        sign_and_verify(device, key, s.SIG_RSA_SHA256)
        secret = b"RSA secret for " + key_algorithm.encode()
        ct = s.rsa_encrypt(key.public_key, s.ASYM_RSA_PKCS1, secret)
        assert device.asymmetric_key_decrypt(key.handle, s.ASYM_RSA_PKCS1, ct) == secret
    elif info.kind == "ec":
        sign_and_verify(device, key, s.SIG_ECDSA_SHA256)
        sign_and_verify(device, key, s.SIG_ECDSA_SHA512)
        peer, z = s.ecdh_peer(key.public_key)
        assert device.key_agreement(key.handle, s.KA_ECDH_RAW, peer) == z
    else:
        sign_and_verify(device, key, s.SIG_ED25519, data=b"")
        sign_and_verify(device, key, s.SIG_ED25519, data=b"m" * 1000)


def test_keys_are_fresh(new_issuer):
    """Two keys of the same algorithm differ, also with the same serverSeed."""
    iss = new_issuer()
    seed = b"\x42" * 64
    a = iss.create_key_entry(s.KEY_EC_P256, server_seed=seed)
    b = iss.create_key_entry(s.KEY_EC_P256, server_seed=seed)
    c = iss.create_key_entry(s.KEY_RSA1024)
    d = iss.create_key_entry(s.KEY_RSA1024)
    assert a.public_key != b.public_key
    assert c.public_key != d.public_key


@pytest.mark.parametrize("key_algorithm,key_parameters", [
    (s.KEY_RSA4096, b"\x01\x00\x01"),            # fixed-exponent algorithm with parameters
    (s.KEY_RSA2048, b"\x01\x00\x01"),
    (s.KEY_EC_P256, b"\x01"),
    (s.KEY_RSA4096_EXP, b""),                     # variable exponent without parameters
    (s.KEY_RSA1024_EXP, b"\x00\x00\x00\x00\x00\x00\x00\x00\x01"),  # 9 bytes
    (s.SKS + "rsa512", b""),
    (s.SKS + "ec.nist.p192", b""),
    (s.SKS + "ec.secg.p256k", b""),
    (s.ENC_AES256_CBC, b""),                      # not a key generation algorithm
], ids=["rsa4096+params", "rsa2048+params", "p256+params", "rsa4096.exp-noparams",
        "rsa1024.exp-9bytes", "rsa512", "p192", "secp256k1-unsupported", "aes-as-key"])
def test_bad_key_algorithm_or_parameters_abort(new_issuer, device, key_algorithm,
                                               key_parameters):
    if key_algorithm == s.SKS + "ec.secg.p256k" and \
            key_algorithm in device.device_info().algorithms:
        pytest.skip("secp256k1 is supported by this device")
    iss = new_issuer()
    good = iss.create_key_entry()
    expect_error(iss.create_key_entry, key_algorithm, key_parameters=key_parameters)
    assert_no_trace(device, iss, [good.handle])


def test_unknown_key_entry_algorithm_aborts(new_issuer, device):
    iss = new_issuer()
    good = iss.create_key_entry()
    expect_error(iss.create_key_entry, key_entry_algorithm=s.SKS + "key.2")
    assert_no_trace(device, iss, [good.handle])


@pytest.mark.parametrize("seed_len,ok", [(0, True), (64, True), (65, False)])
def test_server_seed_length(new_issuer, device, seed_len, ok):
    iss = new_issuer()
    if ok:
        key = iss.provision_key(server_seed=b"\x5a" * seed_len)
        iss.close()
        sign_and_verify(device, key)
    else:
        expect_error(iss.create_key_entry, server_seed=b"\x5a" * seed_len)
        assert_no_trace(device, iss)


def test_imported_private_keys(new_issuer, device, rsa_kmk):
    """importPrivateKey replaces the generated key; the certificate carries the imported
    public key; the MAC still covers the generated public key."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    ec_priv = ec.generate_private_key(ec.SECP384R1())
    rsa_priv = rsa_kmk   # any RSA-2048 key will do
    ed_priv = ed25519.Ed25519PrivateKey.generate()
    iss = new_issuer()
    cases = []
    for alg, priv in ((s.KEY_EC_P384, ec_priv), (s.KEY_RSA2048, rsa_priv),
                      (s.KEY_ED25519, ed_priv)):
        key = iss.create_key_entry(alg)
        iss.set_certificate_path(key, certify=s.spki(priv.public_key()))
        iss.import_private_key(key, priv)
        cases.append(key)
    iss.close()
    for key in cases:
        assert key.certified_key != key.public_key
        sign_and_verify(device, key)
        info = device.get_key_protection_info(key.handle)
        assert info.key_backup == s.KEYBACKUP_IMPORTED


def test_imported_private_key_must_match_certificate(new_issuer, device):
    """closeProvisioningSession checks that the private key matches the certificate."""
    from cryptography.hazmat.primitives.asymmetric import ec
    iss = new_issuer()
    key = iss.create_key_entry(s.KEY_EC_P256)
    iss.set_certificate_path(key, certify=s.spki(ec.generate_private_key(ec.SECP256R1())
                                                  .public_key()))
    iss.import_private_key(key, ec.generate_private_key(ec.SECP256R1()))
    expect_error(iss.close)
    assert_no_trace(device, iss, [key.handle])


def test_generated_key_must_match_certificate(new_issuer, device):
    """A certificate for some other key (and no import) is caught at close."""
    from cryptography.hazmat.primitives.asymmetric import ec
    iss = new_issuer()
    key = iss.create_key_entry(s.KEY_EC_P256)
    iss.set_certificate_path(key, certify=s.spki(ec.generate_private_key(ec.SECP256R1())
                                                  .public_key()))
    expect_error(iss.close)
    assert_no_trace(device, iss, [key.handle])


def test_signature_data_is_the_hash(new_issuer, device):
    """signHashedData signs the given hash, not a hash of it."""
    iss = new_issuer()
    key = iss.provision_key(s.KEY_EC_P256)
    iss.close()
    digest = sha256(b"message")
    sig = device.sign_hashed_data(key.handle, s.SIG_ECDSA_SHA256, digest)
    s.verify_signature(key.public_key, s.SIG_ECDSA_SHA256, digest, sig)
    with pytest.raises(s.IssuerCheckError):
        s.verify_signature(key.public_key, s.SIG_ECDSA_SHA256, sha256(digest), sig)
