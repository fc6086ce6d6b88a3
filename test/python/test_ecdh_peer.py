"""The invalid-curve attack on keyAgreement, through the wire format as an sksd client could
send it: peer points off the curve, outside the field, or on another curve must be refused,
both when the key is read from the store and when the device already holds it in its key
cache (the two take different code paths: crypto.c and ecdh_direct.c). A refused peer must not
disturb the next valid one. Expected secrets come from python3-cryptography.

    /usr/bin/python3 -m pytest test/python/test_ecdh_peer.py
"""

import os
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import provtools as pt

HELPER = os.path.join(pt.BUILD, "test", "helpers", "sks_ecdh_peer")
P256 = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
B256 = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B


def small_x_point():
    """A point of P-256 with a small x: its x + p still fits 32 bytes, so the same point can
    be written with a coordinate outside the field (p = 3 mod 4: square roots by one power)."""
    for x in range(1, 1000):
        rhs = (x ** 3 - 3 * x + B256) % P256
        y = pow(rhs, (P256 + 1) // 4, P256)
        if y * y % P256 == rhs:
            return x, y
    raise AssertionError("no small x on P-256")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return pt.make_store(tmp_path_factory, "ecdhpeer", [("p256", "P-256")])


def spki(pub):
    return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def with_point(valid_spki, x, y):
    """The SPKI of a valid P-256 key with its point replaced by (x, y), on the curve or not."""
    return valid_spki[:-64] + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def agree(store, key, peers):
    r = subprocess.run([HELPER, f"file:{store.path}", str(key.handle), *[p.hex() for p in peers]],
                       capture_output=True, text=True, env=pt.clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(peers), r.stdout
    return lines


@pytest.fixture(scope="module")
def peers(store):
    key = store.keys["p256"]
    ours = serialization.load_pem_public_key(key.pub.read_bytes())
    peer = ec.generate_private_key(ec.SECP256R1())
    good = spki(peer.public_key())
    n = peer.public_key().public_numbers()
    return {
        "good": good,
        "z": peer.exchange(ec.ECDH(), ours).hex(),
        "off_curve": with_point(good, n.x, (n.y + 1) % P256),
        # (x, y) is on the curve; (x + p, y) names the same point with x outside the field
        "on_curve_small_x": with_point(good, *small_x_point()),
        "x_outside_field": with_point(good, small_x_point()[0] + P256, small_x_point()[1]),
        "other_curve": spki(ec.generate_private_key(ec.SECP384R1()).public_key()),
    }


ATTACKS = ["off_curve", "x_outside_field", "other_curve"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_invalid_peer_refused_with_key_cached(store, peers, attack):
    key = store.keys["p256"]
    # the first call reads the key from the store and caches it; the attack hits the cache
    first, attacked, after = agree(store, key, [peers["good"], peers[attack], peers["good"]])
    assert first == f"ok {peers['z']}"
    assert attacked.startswith("error "), f"{attack}: the device computed a secret with it: {attacked}"
    assert after == f"ok {peers['z']}"


@pytest.mark.parametrize("attack", ATTACKS)
def test_invalid_peer_refused_from_store(store, peers, attack):
    key = store.keys["p256"]
    attacked, after = agree(store, key, [peers[attack], peers["good"]])
    assert attacked.startswith("error "), f"{attack}: the device computed a secret with it: {attacked}"
    assert after == f"ok {peers['z']}"


def test_point_with_small_x_is_accepted(store, peers):
    """The control of x_outside_field: the same point written in the field is a valid peer."""
    key = store.keys["p256"]
    cold, warm = agree(store, key, [peers["on_curve_small_x"], peers["on_curve_small_x"]])
    assert cold.startswith("ok ") and cold == warm
