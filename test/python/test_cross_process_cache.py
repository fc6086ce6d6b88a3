"""A device process keeps parsed keys between User API calls; changes made by another
process on the same store (delete, PIN lock-out, update) must be seen by the very next call.
Device A is `sks serve --stdio`; the changes come from the sks tool and a second device."""

import os
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

import sksissuer as s

ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"


def run(*args):
    res = subprocess.run(args, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout.decode()


def handle_of(sks_binary, store, name):
    for line in run(sks_binary, "--store", str(store), "list").splitlines():
        if line.startswith("key ") and line.endswith(": " + name):
            return int(line[4:].split(":")[0])
    raise AssertionError(f"no key {name}")


def sign(device, handle, data=b"x" * 32):
    return device.sign_hashed_data(handle, ECDSA_SHA256, data)


def test_delete_by_another_process_is_seen_at_once(sks_binary, store, device):
    run(sks_binary, "--store", str(store), "generate", "--name", "gone", "--algorithm", "P-256")
    h = handle_of(sks_binary, store, "gone")
    for _ in range(3):          # warm: the key is now cached in device A
        sign(device, h)
    run(sks_binary, "--store", str(store), "delete", "--name", "gone")
    with pytest.raises(s.SksError) as e:
        sign(device, h)
    assert e.value.status == 0x07   # ERROR_NO_KEY


def test_replaced_key_material_is_used_at_once(sks_binary, store, device, tmp_path):
    """Same handle slot reused by a new key of the same name: signatures must come from the
    new key, verified against its certificate."""
    run(sks_binary, "--store", str(store), "generate", "--name", "k", "--algorithm", "P-256")
    h1 = handle_of(sks_binary, store, "k")
    sign(device, h1)
    run(sks_binary, "--store", str(store), "delete", "--name", "k")
    run(sks_binary, "--store", str(store), "generate", "--name", "k", "--algorithm", "P-256")
    h2 = handle_of(sks_binary, store, "k")
    assert h2 != h1                  # handles are never reused
    with pytest.raises(s.SksError):
        sign(device, h1)
    digest = b"\x42" * 32
    raw = sign(device, h2, digest)
    cert = x509.load_pem_x509_certificate(run(sks_binary, "--store", str(store), "cert", "--name", "k").encode())
    r, sv = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    cert.public_key().verify(utils.encode_dss_signature(r, sv), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_pin_protected_key_counts_every_try_across_processes(sks_binary, store, device, tmp_path):
    run(sks_binary, "--store", str(store), "generate", "--name", "p", "--algorithm", "P-256", "--pin", "2468",
        "--pin-retries", "3")
    h = handle_of(sks_binary, store, "p")
    sign_ok = device.sign_hashed_data(h, ECDSA_SHA256, b"y" * 32, authorization=b"2468")
    assert len(sign_ok) == 64
    other = s.Device(sks_binary, store, stderr_path=tmp_path / "other.stderr")
    try:
        for _ in range(3):
            with pytest.raises(s.SksError):
                other.sign_hashed_data(h, ECDSA_SHA256, b"y" * 32, authorization=b"0000")
    finally:
        other.close()
    with pytest.raises(s.SksError) as e:       # device A must see the lock at once
        device.sign_hashed_data(h, ECDSA_SHA256, b"y" * 32, authorization=b"2468")
    assert "locked" in str(e.value)


ECDSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"
ECDH = "https://webpki.github.io/sks/algorithm#ecdh.raw"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"


def refused(call, status, text):
    with pytest.raises(s.SksError) as e:
        call()
    assert e.value.status == status and text in str(e.value), str(e.value)


def test_cached_key_checks_every_call_after_a_good_one(sks_binary, store, device):
    """A cached key remembers the algorithm that last passed its checks (user_api.c); every
    other check still runs on each call, a URI of another method class or one the key is not
    endorsed for is still refused, and the remembered one keeps working."""
    run(sks_binary, "--store", str(store), "generate", "--name", "e", "--algorithm", "P-256",
        "--endorse", ECDSA_SHA256)
    run(sks_binary, "--store", str(store), "generate", "--name", "any", "--algorithm", "P-256")
    e, any_key = handle_of(sks_binary, store, "e"), handle_of(sks_binary, store, "any")
    for h in (e, any_key):
        for _ in range(3):
            assert len(sign(device, h)) == 64           # cached, the algorithm remembered
    refused(lambda: device.sign_hashed_data(e, ECDSA_SHA256, b"x" * 32, parameters=b"\x00"), 0x09,
            "\"parameters\" must be empty")
    refused(lambda: device.sign_hashed_data(e, ECDSA_SHA256, b"x" * 32, authorization=b"1234"), 0x01,
            "not PIN protected")
    refused(lambda: device.sign_hashed_data(e, ECDSA_SHA256, b"x" * 32, biometric_auth=True), 0x01,
            "no biometric protection")
    refused(lambda: device.sign_hashed_data(e, ECDSA_SHA256, b"x" * 31), 0x09, "32-byte hash")
    refused(lambda: device.sign_hashed_data(e, ECDSA_SHA384, b"x" * 48), 0x08, "not endorsed")
    # the same URI through another method: not a key agreement algorithm
    pub = x509.load_pem_x509_certificate(run(sks_binary, "--store", str(store), "cert", "--name", "any").encode())
    from cryptography.hazmat.primitives import serialization
    peer = pub.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    refused(lambda: device.key_agreement(any_key, ECDSA_SHA256, peer), 0x08, "is not a key agreement algorithm")
    refused(lambda: device.sign_hashed_data(any_key, RSA_SHA256, b"x" * 32), 0x08, "does not fit the type")
    assert len(device.key_agreement(any_key, ECDH, peer)) == 32
    refused(lambda: device.sign_hashed_data(any_key, ECDH, b"x" * 32), 0x08, "is not a signature algorithm")
    for h in (e, any_key):
        assert len(sign(device, h)) == 64
