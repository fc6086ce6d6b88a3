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
