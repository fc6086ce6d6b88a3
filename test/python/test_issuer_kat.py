"""Self-test of the issuer's byte builders against the reference known-answer transcript
(test/data/kat/sks-kat-transcript.jsonl). Needs no device: it proves that every
MAC, attestation, encryption and authorization the issuer computes is byte-for-byte what the
reference implementation computes, so a device test failure is not the issuer's fault."""

import hmac
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import sksissuer as s

# The transcript is test data in the repository, unless told otherwise.
TRANSCRIPT = os.environ.get(
    "SKS_KAT_TRANSCRIPT",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "kat", "sks-kat-transcript.jsonl"))


def h(v):
    return bytes.fromhex(v) if v else b""


@pytest.fixture(scope="module")
def events():
    if not os.path.exists(TRANSCRIPT):
        pytest.fail(f"known-answer transcript not found: {TRANSCRIPT}")
    with open(TRANSCRIPT) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def meta(events):
    assert events[0]["event"] == "meta"
    return events[0]


class Replay:
    """Recomputes, from the call inputs alone, every value the issuer must produce."""

    def __init__(self, meta):
        self.meta = meta
        self.sessions = {}      # provisioning handle -> state
        self.keys = {}          # key handle -> dict(public_key, id, cert_path, session)
        self.pins = {}          # pin policy handle -> (id, user_defined)
        self.puks = {}          # puk policy handle -> id
        self.current = None
        self.checked = 0

    def mac(self, sess, method, data, claimed):
        m = s.method_mac(sess["key"], method, sess["counter"], data)
        sess["counter"] += 1
        assert m == claimed, f"{method} MAC mismatch at counter {sess['counter'] - 1}"
        self.checked += 1
        return m

    def attest(self, sess, data, claimed):
        a = s.device_attestation(sess["key"], sess["counter"], data)
        sess["counter"] += 1
        assert a == claimed, "attestation mismatch"
        self.checked += 1


def test_kat_replay(events, meta):
    rp = Replay(meta)
    device_cert = h(meta["deviceCertificate"])
    ephemeral = {}
    for ev in events:
        kind = ev["event"]
        if kind == "server.ephemeralKey":
            ephemeral[ev["session"]] = serialization.load_der_private_key(
                h(ev["privateKeyPkcs8"]), None)
            assert s.spki(ephemeral[ev["session"]].public_key()) == h(ev["publicKeySpki"])
        elif kind == "server.encrypt":
            sess = rp.sessions[rp.current]
            assert s.encryption_key(sess["key"]) == h(ev["encryptionKey"])
            assert s.encrypted_data(sess["key"], h(ev["plaintext"]), h(ev["iv"])) == \
                h(ev["encrypted"])
            assert s.decrypt_data(sess["key"], h(ev["encrypted"])) == h(ev["plaintext"])
            rp.checked += 1
        elif kind == "call.createProvisioningSession":
            priv = ephemeral[ev["session"]]
            privacy = ev["in.privacyEnabled"]
            device_id = s.ANONYMOUS_DEVICE_ID if privacy else device_cert
            client_key = serialization.load_der_public_key(h(ev["out.clientEphemeralKey"]))
            z = priv.exchange(ec.ECDH(), client_key)
            sk = s.session_key(z, ev["out.clientSessionId"], ev["in.serverSessionId"],
                               ev["in.issuerUri"], device_id)
            data = s.session_attestation_data(
                ev["out.clientSessionId"], ev["in.serverSessionId"], ev["in.issuerUri"],
                device_id, ev["in.sessionKeyAlgorithm"], privacy, h(ev["in.serverEphemeralKey"]),
                h(ev["out.clientEphemeralKey"]), h(ev["in.keyManagementKey"]),
                ev["in.clientTime"], ev["in.sessionLifeTime"], ev["in.sessionKeyLimit"],
                h(ev["in.serverCertificate"]))
            if privacy:
                assert s.hmac_sha256(sk, data) == h(ev["out.attestation"])
            else:
                s.verify_device_attestation(device_cert, data, h(ev["out.attestation"]))
            handle = ev["out.provisioningHandle"]
            rp.sessions[handle] = dict(key=sk, counter=0, device_id=device_id,
                                       csid=ev["out.clientSessionId"],
                                       ssid=ev["in.serverSessionId"], uri=ev["in.issuerUri"])
            rp.current = handle
            rp.checked += 1
        elif kind == "server.sessionKey":
            assert rp.sessions[rp.current]["key"] == h(ev["sessionKey"])
        elif kind == "call.createPukPolicy":
            sess = rp.sessions[rp.current]
            rp.mac(sess, s.M_CREATE_PUK_POLICY, s.create_puk_policy_mac_data(
                ev["in.id"], h(ev["in.encryptedPuk"]), ev["in.format"], ev["in.retryLimit"]),
                h(ev["in.mac"]))
            rp.puks[ev["out.pukPolicyHandle"]] = ev["in.id"]
        elif kind == "call.createPinPolicy":
            sess = rp.sessions[rp.current]
            rp.mac(sess, s.M_CREATE_PIN_POLICY, s.create_pin_policy_mac_data(
                ev["in.id"], rp.puks.get(ev["in.pukPolicyHandle"], ""), ev["in.userDefined"],
                ev["in.userModifiable"], ev["in.format"], ev["in.retryLimit"], ev["in.grouping"],
                ev["in.patternRestrictions"], ev["in.minLength"], ev["in.maxLength"],
                ev["in.inputMethod"]), h(ev["in.mac"]))
            rp.pins[ev["out.pinPolicyHandle"]] = (ev["in.id"], ev["in.userDefined"])
        elif kind == "call.createKeyEntry":
            sess = rp.sessions[rp.current]
            pin_id, user_defined = rp.pins.get(ev["in.pinPolicyHandle"], ("", True))
            pin_ref = None if (ev["in.pinPolicyHandle"] == 0 or user_defined) \
                else h(ev["in.pinValue"])
            m = rp.mac(sess, s.M_CREATE_KEY_ENTRY, s.create_key_entry_mac_data(
                ev["in.id"], ev["in.keyEntryAlgorithm"], h(ev["in.serverSeed"]), pin_id, pin_ref,
                ev["in.devicePinProtection"], ev["in.enablePinCaching"],
                ev["in.biometricProtection"], ev["in.exportProtection"],
                ev["in.deleteProtection"], ev["in.appUsage"], ev["in.friendlyName"] or "",
                ev["in.keyAlgorithm"], h(ev["in.keyParameters"]), ev["in.endorsedAlgorithms"]),
                h(ev["in.mac"]))
            rp.attest(sess, s.key_attestation_data(h(ev["out.publicKey"]), m),
                      h(ev["out.attestation"]))
            s.check_public_key(h(ev["out.publicKey"]), ev["in.keyAlgorithm"])
            rp.keys[ev["out.keyHandle"]] = dict(public_key=h(ev["out.publicKey"]), id=ev["in.id"],
                                                path=None, session=rp.current)
        elif kind == "call.setCertificatePath":
            key = rp.keys[ev["in.keyHandle"]]
            sess = rp.sessions[key["session"]]
            path = [h(c) for c in ev["in.certificatePath"]]
            rp.mac(sess, s.M_SET_CERTIFICATE_PATH,
                   s.set_certificate_path_mac_data(key["public_key"], key["id"], path),
                   h(ev["in.mac"]))
            key["path"] = path
        elif kind == "call.addExtension":
            key = rp.keys[ev["in.keyHandle"]]
            sess = rp.sessions[key["session"]]
            rp.mac(sess, s.M_ADD_EXTENSION, s.add_extension_mac_data(
                key["path"][0], ev["in.type"], ev["in.subType"], ev["in.qualifier"],
                h(ev["in.extensionData"])), h(ev["in.mac"]))
            if ev["in.subType"] == s.SUB_TYPE_PROPERTY_BAG:
                assert h(ev["in.extensionData"]) == s.property_bag(
                    [("Name", "Value", True), ("Fixed", "42", False)])
                assert s.parse_property_bag(h(ev["in.extensionData"])) == \
                    [("Name", "Value", True), ("Fixed", "42", False)]
        elif kind in ("call.importSymmetricKey", "call.importPrivateKey"):
            key = rp.keys[ev["in.keyHandle"]]
            sess = rp.sessions[key["session"]]
            method = s.M_IMPORT_SYMMETRIC_KEY if kind.endswith("SymmetricKey") \
                else s.M_IMPORT_PRIVATE_KEY
            rp.mac(sess, method, s.import_key_mac_data(key["path"][0], h(ev["in.encryptedKey"])),
                   h(ev["in.mac"]))
        elif kind in ("call.postDeleteKey", "call.postUnlockKey"):
            sess = rp.sessions[ev["in.provisioningHandle"]]
            method = s.M_POST_DELETE_KEY if kind.endswith("DeleteKey") else s.M_POST_UNLOCK_KEY
            rp.mac(sess, method, s.post_target_mac_data(h(ev["in.authorization"])),
                   h(ev["in.mac"]))
            _check_target_authorization(rp, meta, sess, ev)
        elif kind in ("call.postUpdateKey", "call.postCloneKeyProtection"):
            new_key = rp.keys[ev["in.keyHandle"]]
            sess = rp.sessions[new_key["session"]]
            method = s.M_POST_UPDATE_KEY if kind.endswith("UpdateKey") \
                else s.M_POST_CLONE_KEY_PROTECTION
            rp.mac(sess, method, s.post_new_key_mac_data(new_key["path"][0],
                                                         h(ev["in.authorization"])),
                   h(ev["in.mac"]))
            _check_target_authorization(rp, meta, sess, ev)
        elif kind == "server.targetKeyAuthorization":
            sess = rp.sessions[rp.current]
            assert h(ev["toBeSigned"]) == s.TARGET_KEY_REFERENCE + h(ev["innerHmac"])
            assert s.hmac_sha256(sess["key"] + sess["device_id"], h(ev["innerHmacData"])) == \
                h(ev["innerHmac"])
        elif kind == "call.closeProvisioningSession":
            sess = rp.sessions[ev["in.provisioningHandle"]]
            rp.mac(sess, s.M_CLOSE_PROVISIONING_SESSION, s.close_mac_data(
                sess["csid"], sess["ssid"], sess["uri"], h(ev["in.nonce"])), h(ev["in.mac"]))
            rp.attest(sess, s.close_attestation_data(h(ev["in.nonce"])),
                      h(ev["out.attestation"]))
        elif kind == "call.updateKeyManagementKey":
            new_kmk = h(ev["in.keyManagementKey"])
            assert h(ev["toBeSigned"]) == s.roll_over_authorization_data(new_kmk)
            old = serialization.load_der_public_key(h(meta["kmkEcPublicKeySpki"]))
            sig = h(ev["in.authorization(ECDSA raw r||s by old KMK)"])
            assert len(sig) == 64
            old.verify(s.ecdsa_raw_to_der(sig), h(ev["toBeSigned"]),
                       ec.ECDSA(s.hashes.SHA256()))
            # and our own signer produces a signature the same verifier accepts
            ours = s.roll_over_authorization(
                serialization.load_der_private_key(h(meta["kmkEcPrivateKeyPkcs8"]), None),
                new_kmk)
            old.verify(s.ecdsa_raw_to_der(ours), h(ev["toBeSigned"]),
                       ec.ECDSA(s.hashes.SHA256()))
            rp.checked += 1
    assert rp.checked >= 45, rp.checked


def _check_target_authorization(rp, meta, sess, ev):
    """The authorization must be the RSA key management key's (deterministic) PKCS#1 v1.5
    signature over TargetKeyReference; our signer must reproduce it exactly."""
    target = rp.keys[ev["in.targetKeyHandle"]]
    kmk = serialization.load_der_private_key(h(meta["kmkRsaPrivateKeyPkcs8"]), None)
    tbs = s.target_key_reference(sess["key"], sess["device_id"], target["path"][0])
    assert s.sign_with_key_management_key(kmk, tbs) == h(ev["in.authorization"])
    rp.checked += 1


def test_kat_user_api_results(events, meta):
    """The issuer's result checkers accept the reference's User API outputs."""
    by_seq = {e["seq"]: e for e in events}
    key1 = h(by_seq[27]["out.publicKey"])          # Key.1, P-256
    key2 = h(by_seq[36]["out.publicKey"])          # Key.2, RSA-2048
    sym = h(by_seq[64]["plaintext"])               # Key.3 symmetric key
    imported = h(by_seq[76]["publicKeySpki"])      # Key.4 after importPrivateKey
    clone = h(by_seq[125]["out.publicKey"])        # Key.C

    e = by_seq[92]
    s.verify_signature(key1, e["in.algorithm"], h(e["in.data"]), h(e["out.signatureRawRS"]))
    with pytest.raises(s.IssuerCheckError):
        bad = bytearray(h(e["out.signatureRawRS"]))
        bad[5] ^= 1
        s.verify_signature(key1, e["in.algorithm"], h(e["in.data"]), bytes(bad))
    e = by_seq[93]
    s.verify_signature(key2, e["in.algorithm"], h(e["in.data"]), h(e["out.signature"]))
    e = by_seq[95]
    assert s.reference_hmac(e["in.algorithm"], sym, h(e["in.data"])) == h(e["out.hmac"])
    e = by_seq[96]
    assert s.aes_cbc_pkcs7(sym, h(e["in.parameters"]), h(e["in.data"]), True) == \
        h(e["out.data"])
    e = by_seq[97]
    assert s.aes_ecb(sym, h(e["in.data"]), True) == h(e["out.data"])
    e = by_seq[98]
    out = h(e["out.data(IV||ciphertext)"])
    assert s.aes_cbc_pkcs7(sym, out[:16], out[16:], False) == h(e["in.data"])
    e = by_seq[99]
    peer = serialization.load_der_private_key(h(e["peerPrivateKeyPkcs8"]), None)
    assert s.spki(peer.public_key()) == h(e["in.publicKey"])
    assert peer.exchange(ec.ECDH(), serialization.load_der_public_key(imported)) == h(e["out.Z"])
    e = by_seq[101]
    assert h(e["out.propertyBag"]) == s.property_bag([("Name", "NewValue", True),
                                                       ("Fixed", "42", False)])
    e = by_seq[158]
    data = h(by_seq[92]["in.data"])
    s.verify_signature(clone, s.SIG_ECDSA_SHA256, data, h(e["out.signatureRawRS"]))


def test_brainpool_p320_helpers():
    """The pure-Python brainpoolP320r1 code: ECDSA and ECDH consistency."""
    import hashlib
    import secrets
    c = s.BRAINPOOL_P320R1
    d = secrets.randbelow(c.n - 1) + 1
    q = c.mul(d, c.g)
    assert c.on_curve(q)
    assert c.mul(c.n, c.g) is None
    spki = c.spki(q)
    assert s.load_public_key(spki).point == q
    assert s.canonical_spki(spki) == spki
    digest = hashlib.sha256(b"brainpool").digest()
    k = secrets.randbelow(c.n - 1) + 1
    r = c.mul(k, c.g)[0] % c.n
    sig_s = pow(k, -1, c.n) * (int.from_bytes(digest, "big") + r * d) % c.n
    raw = r.to_bytes(c.size, "big") + sig_s.to_bytes(c.size, "big")
    s.verify_signature(spki, s.SIG_ECDSA_SHA256, digest, raw)
    with pytest.raises(s.IssuerCheckError):
        s.verify_signature(spki, s.SIG_ECDSA_SHA256, hashlib.sha256(b"other").digest(), raw)
    peer_spki, z = s.ecdh_peer(spki)
    peer = s.load_public_key(peer_spki).point
    assert c.mul(d, peer)[0].to_bytes(c.size, "big") == z
    cert = s.CertificateAuthority().issue(spki, "p320")
    assert spki in cert


def test_wire_primitives():
    assert s.arr(b"ab") == b"\x00\x02ab"
    assert s.string("é") == b"\x00\x02\xc3\xa9"
    assert s.blob(b"x") == b"\x00\x00\x00\x01x"
    assert s.listof([b"a", b"bc"], s.arr) == b"\x00\x02\x00\x01a\x00\x02bc"
    assert s.mac_key(b"K", "closeProvisioningSession", 0x0102) == \
        b"KcloseProvisioningSession\x01\x02"
    r = s.Reader(b"\x00\x01\x02\x00\x00\x00\x01z\x01")
    assert r.array() == b"\x02"
    assert r.blob() == b"z"
    assert r.bool() is True
    r.end()
    with pytest.raises(s.ProtocolError):
        s.Reader(b"\x02").bool()
    with pytest.raises(s.ProtocolError):
        s.Reader(b"\x00\x05ab").array()
    assert hmac.compare_digest(s.hmac_sha256(b"k", b"d"), s.hmac_sha256(b"k", b"d"))
