#!/usr/bin/python3
"""Builds the provisioned store fuzz_wire_provisioned starts from, and its seed requests.

    make_template.py --sks BUILD/tools/sks/sks --out DIR [--seeds CORPUS_DIR]

DIR receives store.db and store.db.key: a store provisioned through the project's own path
(`sks init`, a real provisioning session driven by the Python issuer of test/python over
`sks serve --stdio`, and `sks skip request`), holding
  - keys of every type: EC P-256 (imported), P-384, P-521, brainpoolP256r1, RSA-2048, Ed25519
    (imported), and a symmetric key;
  - PIN policies with retry limits and each grouping (shared, signature+standard, unique),
    a PUK policy, keys with no PIN;
  - exportable keys (no protection, PIN, PUK) and non-exportable ones, delete protections;
  - a property bag and a plain extension;
  - a pending SKIP request (an open skipRequest session).
The sequence is fixed, so handles are the same in every template (the seeds rely on it).

With --seeds, one valid request per User API, PIN/PUK, export, delete and SKIP method is
written there (a file per request: method id byte + arguments, as the fuzz target takes it),
and each is checked against a copy of the template: those meant to succeed must.

DIR/seeds/ always receives the requests that can only be valid for this template, whose keys
are new each time: a skipImport package for its pending request (so the fuzzer starts inside
the import, past the ECDH, the unwrapping and the certificate checks) and an RSA decryption.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "python"))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding  # noqa: E402

import sksissuer as s  # noqa: E402
import skipissuer as si  # noqa: E402
from sksissuer import arr, blob, boolean, listof, string, uint, ushort  # noqa: E402

PUK = "12345678"
PIN_SHARED = "1357"        # P-384 and brainpoolP256r1 share it (grouping shared)
PIN_SIGNATURE = "2468"     # RSA, signature key under signature+standard
PIN_STANDARD = "8642"      # P-521, the other key under signature+standard
PIN_UNIQUE = "9753"        # the symmetric key (grouping unique)
SYMMETRIC_SECRET = bytes(range(32))
T_BAG = "https://example.com/sks/fuzz/properties"
T_EXT = "https://example.com/sks/fuzz/extension"


def fixed_p256():
    return ec.derive_private_key(0x1F2E3D4C5B6A79881F2E3D4C5B6A79881F2E3D4C5B6A79881F2E3D4C5B6A7988,
                                 ec.SECP256R1())


def fixed_ed25519():
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"sks fuzz ed25519").digest())


def provision(device):
    """The one provisioning session; returns {name: KeyEntry}."""
    iss = s.Issuer(device, server_session_id="SksFuzzTemplate").open()
    puk = iss.create_puk_policy(PUK, retry_limit=3)
    shared = iss.create_pin_policy(puk=puk, grouping=s.GROUPING_SHARED, retry_limit=3)
    sigstd = iss.create_pin_policy(grouping=s.GROUPING_SIGNATURE_PLUS_STANDARD, retry_limit=5)
    unique = iss.create_pin_policy(puk=puk, grouping=s.GROUPING_UNIQUE, retry_limit=10)
    keys = {}

    k = iss.create_key_entry(s.KEY_EC_P256, friendly_name="p256-imported", export_protection=s.PROTECTION_NONE)
    iss.set_certificate_path(k, certify=s.spki(fixed_p256().public_key()))
    iss.import_private_key(k, fixed_p256())
    iss.add_property_bag(k, T_BAG, [("Label", "fuzz", True), ("Fixed", "1", False)])
    keys["p256"] = k
    keys["p384"] = iss.provision_key(s.KEY_EC_P384, friendly_name="p384-pin", pin_policy=shared,
                                     pin=PIN_SHARED, export_protection=s.PROTECTION_PIN,
                                     delete_protection=s.PROTECTION_PIN)
    keys["bp256"] = iss.provision_key(s.KEY_BP256, friendly_name="bp256-pin", pin_policy=shared,
                                      pin=PIN_SHARED, export_protection=s.PROTECTION_PUK,
                                      delete_protection=s.PROTECTION_PUK)
    keys["rsa"] = iss.provision_key(s.KEY_RSA2048, friendly_name="rsa-signature", pin_policy=sigstd,
                                    pin=PIN_SIGNATURE, app_usage=s.APP_SIGNATURE,
                                    export_protection=s.PROTECTION_NOT_ALLOWED,
                                    delete_protection=s.PROTECTION_NOT_ALLOWED)
    keys["p521"] = iss.provision_key(s.KEY_EC_P521, friendly_name="p521-standard", pin_policy=sigstd,
                                     pin=PIN_STANDARD, app_usage=s.APP_ENCRYPTION)
    k = iss.create_key_entry(s.KEY_ED25519, friendly_name="ed25519-imported",
                             export_protection=s.PROTECTION_NOT_ALLOWED,
                             delete_protection=s.PROTECTION_NOT_ALLOWED)
    iss.set_certificate_path(k, certify=s.spki(fixed_ed25519().public_key()))
    iss.import_private_key(k, fixed_ed25519())
    iss.add_extension(k, T_EXT, s.SUB_TYPE_EXTENSION, b"fuzz extension data")
    keys["ed25519"] = k
    k = iss.provision_key(s.KEY_EC_P256, friendly_name="symmetric", pin_policy=unique, pin=PIN_UNIQUE,
                          export_protection=s.PROTECTION_PIN, delete_protection=s.PROTECTION_PIN)
    iss.import_symmetric_key(k, SYMMETRIC_SECRET)
    keys["symmetric"] = k
    iss.close()
    return keys


def run(args, **kw):
    res = subprocess.run([str(a) for a in args], capture_output=True, timeout=300, **kw)
    if res.returncode != 0:
        sys.exit(f"make_template: {' '.join(map(str, args))} failed:\n{res.stderr.decode(errors='replace')}")
    return res


def build_template(sks, out):
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    db = os.path.join(out, "store.db")
    run([sks, "--store", db, "init"])
    device = s.Device(sks, db)
    try:
        keys = provision(device)
    finally:
        device.close()
    # The device keeps the anchors of a request and opens only packages that verify to them.
    ca = si.Ca("sks fuzz SKIP CA")
    with open(os.path.join(out, "skip-anchor.pem"), "wb") as f:
        f.write(ca.pem)
    run([sks, "--store", db, "skip", "request", "--curve", "P-256", "--subject", "CN=sks fuzz",
         "--trust", os.path.join(out, "skip-anchor.pem"), "--out", os.path.join(out, "skip-request.pem")])
    device = s.Device(sks, db)
    try:
        pending = [x.provisioning_handle for x in device.list_sessions(True)]
    finally:
        device.close()
    if len(pending) != 1:
        sys.exit(f"make_template: expected one pending SKIP session, found {pending}")
    with open(os.path.join(out, "skip-request.pem"), "rb") as f:
        request = si.parse_request(f.read())
    for name in os.listdir(out):  # the fuzz target copies store.db and its key only
        if name not in ("store.db", "store.db.key"):
            os.unlink(os.path.join(out, name))
    return keys, pending[0], request, ca


def valid_skip_import(session, request, ca):
    """skipImport (handle, whole package) of a package issued for the template's own request
    by the CA its anchors name (P-256 and Ed25519)."""
    pkg = si.Package.issue(request, ca, ["secp256r1", "ed25519"], 256)
    return bytes([201]) + uint(session) + blob(pkg.der())


def template_seeds(keys, session, request, ca):
    """(name, request, must_succeed) valid for this template only."""
    rsa_ = keys["rsa"]
    rsa_pub = x509.load_der_x509_certificate(rsa_.ee_certificate).public_key()
    ciphertext = rsa_pub.encrypt(b"fuzz", padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))
    return [
        ("skipImport-valid", valid_skip_import(session, request, ca), True),
        ("decrypt-rsa-oaep-valid", user_call(101, rsa_, s.ASYM_RSA_OAEP_SHA256, ciphertext, PIN_SIGNATURE), True),
    ]


def user_call(method_id, key, algorithm, data, auth=b"", parameters=b"", data_is_blob=False, mode=None):
    body = uint(key.handle) + string(algorithm)
    if mode is not None:
        body += boolean(mode)
    body += arr(parameters) + boolean(False) + arr(auth.encode() if isinstance(auth, str) else auth)
    return bytes([method_id]) + body + (blob(data) if data_is_blob else arr(data))


def skip_import_frame(session, request):
    """A well-formed skipImport: a whole package for the template's request, from a CA its
    anchors do not name. It is refused by the chain check, before any decryption."""
    pkg = si.Package.issue(request, si.Ca("sks fuzz foreign CA"), ["secp256r1"], 256)
    return bytes([201]) + uint(session) + blob(pkg.der())


def seeds(keys, session, request):
    """(name, request, must_succeed)."""
    h256, h384 = hashlib.sha256(b"fuzz").digest(), hashlib.sha384(b"fuzz").digest()
    p384, bp256, rsa_, p521 = keys["p384"], keys["bp256"], keys["rsa"], keys["p521"]
    sym, p256, ed = keys["symmetric"], keys["p256"], keys["ed25519"]
    rsa_pub = x509.load_der_x509_certificate(rsa_.ee_certificate).public_key()
    peer = ec.derive_private_key(5, ec.SECP521R1()).public_key()
    out = [
        ("enumerateKeys", bytes([70]) + uint(0), True),
        ("getKeyAttributes", bytes([71]) + uint(p256.handle), True),
        ("getKeyProtectionInfo", bytes([72]) + uint(bp256.handle), True),
        ("getExtension", bytes([73]) + uint(p256.handle) + string(T_BAG), True),
        ("setProperty", bytes([74]) + uint(p256.handle) + string(T_BAG) + string("Label") + string("x"), True),
        ("sign-p256", user_call(100, p256, s.SIG_ECDSA_SHA256, h256), True),
        ("sign-p384-pin", user_call(100, p384, s.SIG_ECDSA_SHA384, h384, PIN_SHARED), True),
        ("sign-bp256-pin", user_call(100, bp256, s.SIG_ECDSA_SHA256, h256, PIN_SHARED), True),
        ("sign-rsa-pss", user_call(100, rsa_, s.SIG_RSA_PSS_SHA256, h256, PIN_SIGNATURE), True),
        ("sign-rsa-pkcs1", user_call(100, rsa_, s.SIG_RSA_SHA256, h256, PIN_SIGNATURE), True),
        ("sign-ed25519", user_call(100, ed, s.SIG_ED25519, b"fuzz message"), True),
        ("sign-wrong-pin", user_call(100, p384, s.SIG_ECDSA_SHA384, h384, "0000"), False),
        ("decrypt-rsa-oaep", user_call(101, rsa_, s.ASYM_RSA_OAEP_SHA256, rsa_pub.encrypt(
            b"fuzz", padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)), PIN_SIGNATURE), False),
        ("ecdh-p521", user_call(102, p521, s.KA_ECDH_RAW, s.spki(peer), PIN_STANDARD), True),
        ("hmac", user_call(103, sym, s.HMAC_SHA256, b"fuzz", PIN_UNIQUE, data_is_blob=True), True),
        ("aes-cbc", user_call(104, sym, s.ENC_AES256_CBC, bytes(16) + b"0123456789abcdef", PIN_UNIQUE,
                              data_is_blob=True, mode=True), True),
        ("aes-ecb", user_call(104, sym, s.ENC_AES_ECB_NOPAD, bytes(32), PIN_UNIQUE, data_is_blob=True,
                              mode=False), True),
        ("exportKey-none", bytes([81]) + uint(p256.handle) + arr(b""), True),
        ("exportKey-pin", bytes([81]) + uint(p384.handle) + arr(PIN_SHARED.encode()), True),
        ("exportKey-puk", bytes([81]) + uint(bp256.handle) + arr(PUK.encode()), True),
        ("exportKey-symmetric", bytes([81]) + uint(sym.handle) + arr(PIN_UNIQUE.encode()), True),
        ("exportKey-forbidden", bytes([81]) + uint(ed.handle) + arr(b""), False),
        ("deleteKey-pin", bytes([80]) + uint(p384.handle) + arr(PIN_SHARED.encode()), True),
        ("deleteKey-puk", bytes([80]) + uint(bp256.handle) + arr(PUK.encode()), True),
        ("deleteKey-none", bytes([80]) + uint(p521.handle) + arr(b""), True),
        ("deleteKey-forbidden", bytes([80]) + uint(rsa_.handle) + arr(b""), False),
        ("unlockKey", bytes([82]) + uint(bp256.handle) + arr(PUK.encode()), True),
        ("changePin", bytes([83]) + uint(p384.handle) + arr(PIN_SHARED.encode()) + arr(b"7531"), True),
        ("changePin-unique", bytes([83]) + uint(sym.handle) + arr(PIN_UNIQUE.encode()) + arr(b"1470"), True),
        ("setPin", bytes([84]) + uint(bp256.handle) + arr(PUK.encode()) + arr(b"2580"), True),
        ("enumerateProvisioningSessions", bytes([4]) + uint(0) + boolean(True), True),
        ("skipImport", skip_import_frame(session, request), False),
    ]
    return out


def check_and_write(sks, template, seed_list, corpus):
    os.makedirs(corpus, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, request, must_succeed in seed_list:
            db = os.path.join(tmp, "store.db")
            for f in ("store.db", "store.db.key"):
                shutil.copy(os.path.join(template, f), os.path.join(tmp, f))
            device = s.Device(sks, db)
            try:
                reply = device.transact(request)
            finally:
                device.close()
            for extra in os.listdir(tmp):
                os.unlink(os.path.join(tmp, extra))
            if must_succeed and reply[:1] != b"\x00":
                sys.exit(f"make_template: seed {name} failed on the template: {reply[3:].decode(errors='replace')}")
            with open(os.path.join(corpus, name), "wb") as f:
                f.write(request)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sks", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds")
    a = ap.parse_args()
    keys, session, request, ca = build_template(a.sks, a.out)
    check_and_write(a.sks, a.out, template_seeds(keys, session, request, ca), os.path.join(a.out, "seeds"))
    if a.seeds:
        check_and_write(a.sks, a.out, seeds(keys, session, request), a.seeds)


if __name__ == "__main__":
    main()
