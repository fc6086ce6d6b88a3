"""Sealing: the database file alone reveals no key.

Private keys (RSA-2048, P-256, Ed25519) and a symmetric key are imported with known bytes, and
keys generated on the device are exported (exportKey gives their PKCS#8); PIN and PUK values
are chosen at random. None of these secrets - as PKCS#8 DER, as the raw private scalar / RSA
primes and private exponent / Ed25519 seed, as the symmetric key, as the PIN/PUK, nor in hex,
base64 or PEM form - may occur in the store's database, -wal or -shm files, neither while the
device runs nor after it exits. As a control, the public keys and certificates must be found
in those files (so the search looks where the data is).

And the master key is needed: a copy of the database without its master key file, or with a
different 32-byte master key, does not open, and the error says which master key file.
"""

import base64
import os
import secrets
import shutil
import string as _string
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import sksissuer as s
from skshelpers import sign_and_verify

ALNUM = _string.ascii_uppercase + _string.digits


def random_alnum(n):
    return "".join(secrets.choice(ALNUM) for _ in range(n)).encode()


def store_files(db):
    """Every file the store keeps beside its master key: the database, its SQLite companions
    (-wal, -shm, -journal) and any other file named after it (e.g. a change counter)."""
    db = str(db)
    folder, base = os.path.split(db)
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(base) and path != db + ".key" and os.path.isfile(path):
            with open(path, "rb") as f:
                out[name] = f.read()
    return out


def forms(secret):
    """The ways a careless device might write a secret: raw, reversed (little-endian numbers),
    hex, base64 and, for long values, a full line of their PEM body."""
    secret = bytes(secret)
    out = {"raw": secret, "hex": secret.hex().encode(), "HEX": secret.hex().upper().encode(),
           "base64": base64.b64encode(secret)}
    if len(secret) <= 512:
        out["reversed"] = secret[::-1]
    b64 = base64.b64encode(secret)
    if len(b64) >= 128:
        out["PEM line"] = b64[64:128]
    return out


def int_bytes(n):
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def private_secrets(label, key):
    """{description: bytes} of the secret parts of a cryptography private key."""
    out = {f"{label} PKCS#8": s.pkcs8(key)}
    if isinstance(key, rsa.RSAPrivateKey):
        nums = key.private_numbers()
        out[f"{label} prime p"] = int_bytes(nums.p)
        out[f"{label} prime q"] = int_bytes(nums.q)
        out[f"{label} private exponent d"] = int_bytes(nums.d)
        out[f"{label} traditional RSAPrivateKey DER"] = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        out[f"{label} private scalar"] = key.private_numbers().private_value.to_bytes(size, "big")
        out[f"{label} SEC1 ECPrivateKey DER"] = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption())
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        out[f"{label} seed"] = key.private_bytes(serialization.Encoding.Raw,
                                                 serialization.PrivateFormat.Raw,
                                                 serialization.NoEncryption())
    else:
        raise TypeError(type(key))
    return out


def find_leaks(files, needles):
    """[(needle description, form, file name, offset)] of every occurrence."""
    leaks = []
    for what, secret in needles.items():
        for form, pattern in forms(secret).items():
            for name, data in files.items():
                at = data.find(pattern)
                if at >= 0:
                    leaks.append((what, form, name, at))
    return leaks


def test_imported_and_generated_keys_are_sealed(store, device, ca, rsa_kmk):
    pin_user = random_alnum(12)            # user-defined: sent in clear, must be sealed
    pin_issuer = random_alnum(12)          # issuer-set: sent encrypted
    puk = random_alnum(16)
    imported = {
        "imported RSA-2048": (s.KEY_RSA2048, rsa_kmk),
        "imported P-256": (s.KEY_EC_P256, ec.generate_private_key(ec.SECP256R1())),
        "imported Ed25519": (s.KEY_ED25519, ed25519.Ed25519PrivateKey.generate()),
    }
    symmetric = os.urandom(32)

    iss = s.Issuer(device, ca=ca).open()
    puk_policy = iss.create_puk_policy(puk, format=s.FORMAT_ALPHANUMERIC, retry_limit=3)
    user_policy = iss.create_pin_policy(puk=puk_policy, format=s.FORMAT_ALPHANUMERIC,
                                        min_length=4, max_length=16)
    issuer_policy = iss.create_pin_policy(puk=puk_policy, user_defined=False,
                                          user_modifiable=False, format=s.FORMAT_ALPHANUMERIC,
                                          min_length=4, max_length=16)
    keys = {}
    for label, (alg, priv) in imported.items():
        key = iss.create_key_entry(alg, pin_policy=user_policy, pin=pin_user)
        iss.set_certificate_path(key, certify=s.spki(priv.public_key()))
        iss.import_private_key(key, priv)
        keys[label] = key
    sym = iss.provision_key(s.KEY_EC_P256, pin_policy=issuer_policy, pin=pin_issuer)
    iss.import_symmetric_key(sym, symmetric)
    generated = {label: iss.provision_key(alg)
                 for label, alg in (("generated RSA-2048", s.KEY_RSA2048),
                                    ("generated P-256", s.KEY_EC_P256),
                                    ("generated Ed25519", s.KEY_ED25519))}
    iss.close()

    needles = {"symmetric key": symmetric, "user-defined PIN": pin_user,
               "issuer-set PIN": pin_issuer, "PUK": puk}
    for label, (_, priv) in imported.items():
        needles.update(private_secrets(label, priv))
        sign_and_verify(device, keys[label])          # the imported key is the one in use
    assert device.perform_hmac(sym.handle, s.HMAC_SHA256, b"x", pin_issuer) == \
        s.reference_hmac(s.HMAC_SHA256, symmetric, b"x")
    for label, key in generated.items():
        der = device.export_key(key.handle)
        priv = serialization.load_der_private_key(der, password=None)
        assert s.spki(priv.public_key()) == key.public_key, f"{label}: export is another key"
        needles.update(private_secrets(label, priv))
        needles[f"{label} PKCS#8 as exported"] = der
        sign_and_verify(device, key)

    # The public halves and the certificates are stored in clear: finding them shows the
    # search covers the files the data went to.
    controls = {f"{label} public key": k.public_key for label, k in {**keys, **generated}.items()}
    controls.update({f"{label} certificate": k.ee_certificate
                     for label, k in {**keys, **generated}.items()})

    running = store_files(store)
    device.close()
    exited = store_files(store)
    for when, files in (("while the device runs", running), ("after the device exited", exited)):
        assert files.get("store.db"), f"{when}: no database file"
        missing = [what for what, v in controls.items()
                   if not any(v in data for data in files.values())]
        assert not missing, f"{when}: controls not found in {sorted(files)}: {missing}"
        leaks = find_leaks(files, needles)
        assert not leaks, (f"{when}: secrets in the store files "
                           f"({', '.join(f'{n}: {len(d)} bytes' for n, d in files.items())}): "
                           + "; ".join(f"{w} ({f}) in {n} at offset {o}"
                                       for w, f, n, o in leaks))


def run_sks(sks_binary, db, *args, master_key=None, stdin=None):
    cmd = [sks_binary, "--store", str(db)]
    if master_key is not None:
        cmd += ["--master-key", str(master_key)]
    res = subprocess.run(cmd + list(args), input=stdin, capture_output=True, timeout=60)
    out = (res.stdout + res.stderr).decode("utf-8", "replace")
    return res.returncode, out if len(out) < 600 else out[:600] + "..."


def copy_store(src, dst_dir):
    """Copies the database (after the device exited) without its master key file."""
    os.makedirs(dst_dir, exist_ok=True)
    dst = os.path.join(dst_dir, "store.db")
    for suffix in ("", "-wal"):
        if os.path.exists(str(src) + suffix):
            shutil.copyfile(str(src) + suffix, dst + suffix)
    return dst


@pytest.fixture
def provisioned_store(store, device, ca):
    """The store with one closed session and its key; the device has exited."""
    iss = s.Issuer(device, ca=ca).open()
    key = iss.provision_key(s.KEY_EC_P256)
    iss.close()
    device.close()
    return store, key


def open_attempts(sks_binary, db, master_key=None):
    """Opening the copy with the CLI (`info`) and as a device (`serve --stdio`)."""
    return {"info": run_sks(sks_binary, db, "info", master_key=master_key),
            "serve --stdio": run_sks(sks_binary, db, "serve", "--stdio", master_key=master_key,
                                     stdin=b"")}


def test_copy_with_its_master_key_opens(provisioned_store, sks_binary, tmp_path):
    """The control for the two tests below: the copied store is sound."""
    store, key = provisioned_store
    db = copy_store(store, tmp_path / "copy")
    shutil.copyfile(str(store) + ".key", db + ".key")
    os.chmod(db + ".key", 0o600)
    for how, (rc, out) in open_attempts(sks_binary, db).items():
        assert rc == 0, f"{how} of the copy with its master key failed ({rc}): {out}"
    dev = s.Device(sks_binary, db)
    try:
        sign_and_verify(dev, key)
    finally:
        dev.close()


def test_copy_without_master_key_does_not_open(provisioned_store, sks_binary, tmp_path):
    store, _ = provisioned_store
    db = copy_store(store, tmp_path / "copy")
    assert not os.path.exists(db + ".key")
    for how, (rc, out) in open_attempts(sks_binary, db).items():
        assert rc > 0, f"{how} opened a store without its master key (status {rc}): {out}"
        assert "master key" in out and db + ".key" in out, \
            f"{how}: the error does not name the missing master key file {db}.key: {out!r}"
        assert "No such file" in out or "does not exist" in out or "missing" in out, \
            f"{how}: the error does not say the master key file is missing: {out!r}"
    # Naming a master key file that is not there is the same error.
    elsewhere = tmp_path / "nowhere.key"
    for how, (rc, out) in open_attempts(sks_binary, db, master_key=elsewhere).items():
        assert rc > 0 and "master key" in out and str(elsewhere) in out, f"{how}: {out!r}"


@pytest.mark.parametrize("how_placed", ["default path", "--master-key"])
def test_copy_with_another_master_key_does_not_open(provisioned_store, sks_binary, tmp_path,
                                                    how_placed):
    store, _ = provisioned_store
    db = copy_store(store, tmp_path / "copy")
    wrong = db + ".key" if how_placed == "default path" else str(tmp_path / "other.key")
    with open(wrong, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(wrong, 0o600)
    master = None if how_placed == "default path" else wrong
    for how, (rc, out) in open_attempts(sks_binary, db, master_key=master).items():
        assert rc > 0, f"{how} opened the store with a different master key (status {rc}): {out}"
        assert "master key" in out and wrong in out, \
            f"{how}: the error does not name the master key {wrong}: {out!r}"
    # A master key file of the wrong size is refused as such.
    with open(wrong, "wb") as f:
        f.write(os.urandom(31))
    for how, (rc, out) in open_attempts(sks_binary, db, master_key=master).items():
        assert rc > 0 and "master key" in out and wrong in out, f"{how}: {out!r}"
