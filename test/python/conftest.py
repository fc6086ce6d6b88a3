"""Fixtures for the Python issuer tests.

The device under test is $SKS_BUILD_DIR/tools/sks/sks (SKS_BUILD_DIR defaults to
/work/main/build). Every test gets a fresh store in its tmp_path and its own
`sks serve --stdio` process. Run with Debian's interpreter:

    /usr/bin/python3 -m pytest test/python
"""

import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sksissuer  # noqa: E402


def _binary_path():
    build = os.environ.get("SKS_BUILD_DIR", "/work/main/build")
    return os.path.join(build, "tools", "sks", "sks")


@pytest.fixture(scope="session")
def sks_binary():
    path = _binary_path()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"the sks device binary is missing: {path} (set SKS_BUILD_DIR or build it: "
                    f"cd /work/main && cmake -S . -B build -DCMAKE_BUILD_TYPE=Debug && "
                    f"cmake --build build -j2)", pytrace=False)
    return path


@pytest.fixture
def store(tmp_path, sks_binary):
    """A freshly initialized store: `sks --store DB init`."""
    db = tmp_path / "store.db"
    res = subprocess.run([sks_binary, "--store", str(db), "init"], capture_output=True,
                         timeout=60)
    if res.returncode != 0:
        pytest.fail(f"`sks --store {db} init` failed with status {res.returncode}:\n"
                    f"{res.stdout.decode(errors='replace')}\n{res.stderr.decode(errors='replace')}",
                    pytrace=False)
    return db


@pytest.fixture
def device(store, sks_binary, tmp_path):
    d = sksissuer.Device(sks_binary, store, stderr_path=tmp_path / "device.stderr")
    try:
        yield d
    finally:
        d.close()


@pytest.fixture(scope="session")
def ca():
    return sksissuer.CertificateAuthority()


@pytest.fixture(scope="session")
def rsa_kmk():
    """One RSA-2048 key management key for the whole run (key generation is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def ec_kmk():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def new_issuer(device, ca):
    """new_issuer(**kw) -> an Issuer whose session is already open."""
    def make(**kw):
        kw.setdefault("ca", ca)
        return sksissuer.Issuer(device, **kw).open()
    return make
