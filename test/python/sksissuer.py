"""An independent SKS issuer, written from the SKS specification alone.

This module is the Python peer of the C device: it talks to ``sks serve --stdio`` over the
byte stream of docs/wire-format.md and plays the issuer's role of the provisioning API
(session key agreement, MACs, encryption, attestation checks, certificates, key-management
authorizations). It depends only on ``cryptography``.

Layout:

* serialization primitives (spec 7.1 "Data Types") and a reply ``Reader``;
* byte builders named after the specification: session key KDF, session attestation data,
  MAC keys and the MAC data of every method, EncryptionKey, key and close attestations,
  target key reference, roll-over authorization, property bags;
* ``Device``: one ``sks serve --stdio`` process, one method per SKS method;
* ``Issuer``: drives one provisioning session;
* ``CertificateAuthority`` and checking helpers (signatures, RSA encryption, ECDH, AES, HMAC)
  so tests can verify device results with an independent implementation.
"""

import datetime
import hashlib
import hmac
import os
import secrets
import select
import struct
import subprocess
from dataclasses import dataclass, field
from typing import List, Optional

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sympadding
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

# ---------------------------------------------------------------------------------------------
# Algorithm URIs
# ---------------------------------------------------------------------------------------------

SKS = "https://webpki.github.io/sks/algorithm#"
XMLDSIG = "http://www.w3.org/2000/09/xmldsig#"
XMLDSIG_MORE = "http://www.w3.org/2001/04/xmldsig-more#"
XMLENC = "http://www.w3.org/2001/04/xmlenc#"

ALG_SESSION_1 = SKS + "session.1"
ALG_KEY_1 = SKS + "key.1"
ALG_NONE = SKS + "none"

KEY_RSA1024 = SKS + "rsa1024"
KEY_RSA2048 = SKS + "rsa2048"
KEY_RSA3072 = SKS + "rsa3072"
KEY_RSA4096 = SKS + "rsa4096"
KEY_RSA1024_EXP = SKS + "rsa1024.exp"
KEY_RSA2048_EXP = SKS + "rsa2048.exp"
KEY_RSA3072_EXP = SKS + "rsa3072.exp"
KEY_RSA4096_EXP = SKS + "rsa4096.exp"
KEY_EC_P256 = SKS + "ec.nist.p256"
KEY_EC_P384 = SKS + "ec.nist.p384"
KEY_EC_P521 = SKS + "ec.nist.p521"
KEY_BP256 = SKS + "ec.brainpool.p256r1"
KEY_BP320 = SKS + "ec.brainpool.p320r1"
KEY_BP384 = SKS + "ec.brainpool.p384r1"
KEY_BP512 = SKS + "ec.brainpool.p512r1"
KEY_ED25519 = SKS + "ed25519"

SIG_RSA_SHA256 = XMLDSIG_MORE + "rsa-sha256"
SIG_RSA_SHA384 = XMLDSIG_MORE + "rsa-sha384"
SIG_RSA_SHA512 = XMLDSIG_MORE + "rsa-sha512"
SIG_ECDSA_SHA256 = XMLDSIG_MORE + "ecdsa-sha256"
SIG_ECDSA_SHA384 = XMLDSIG_MORE + "ecdsa-sha384"
SIG_ECDSA_SHA512 = XMLDSIG_MORE + "ecdsa-sha512"
SIG_RSA_NONE = SKS + "rsa.pkcs1.none"
SIG_ECDSA_NONE = SKS + "ecdsa.none"
SIG_RSA_PSS_SHA256 = SKS + "rsa.pss.sha256"
SIG_RSA_PSS_SHA384 = SKS + "rsa.pss.sha384"
SIG_RSA_PSS_SHA512 = SKS + "rsa.pss.sha512"
SIG_ED25519 = KEY_ED25519

ENC_AES128_CBC = XMLENC + "aes128-cbc"
ENC_AES192_CBC = XMLENC + "aes192-cbc"
ENC_AES256_CBC = XMLENC + "aes256-cbc"
ENC_AES_CBC = SKS + "aes.cbc"
ENC_AES_ECB_NOPAD = SKS + "aes.ecb.nopad"

HMAC_SHA1 = XMLDSIG + "hmac-sha1"
HMAC_SHA256 = XMLDSIG_MORE + "hmac-sha256"
HMAC_SHA384 = XMLDSIG_MORE + "hmac-sha384"
HMAC_SHA512 = XMLDSIG_MORE + "hmac-sha512"

ASYM_RSA_PKCS1 = SKS + "rsa.es.pkcs1_5"
ASYM_RSA_OAEP_SHA1 = SKS + "rsa.oaep.sha1"
ASYM_RSA_OAEP_SHA256 = SKS + "rsa.oaep.sha256"
# project addition: OAEP digest, MGF1 digest and label in "parameters" (oaep_parameters)
ASYM_RSA_OAEP = SKS + "rsa.oaep"

KA_ECDH_RAW = SKS + "ecdh.raw"

# keyAlgorithm URI -> ("rsa", bits, variable exponent) | ("ec", curve name) | ("ed25519",)
KEY_ALGORITHMS = {
    KEY_RSA1024: ("rsa", 1024, False),
    KEY_RSA2048: ("rsa", 2048, False),
    KEY_RSA3072: ("rsa", 3072, False),
    KEY_RSA4096: ("rsa", 4096, False),
    KEY_RSA1024_EXP: ("rsa", 1024, True),
    KEY_RSA2048_EXP: ("rsa", 2048, True),
    KEY_RSA3072_EXP: ("rsa", 3072, True),
    KEY_RSA4096_EXP: ("rsa", 4096, True),
    KEY_EC_P256: ("ec", "secp256r1"),
    KEY_EC_P384: ("ec", "secp384r1"),
    KEY_EC_P521: ("ec", "secp521r1"),
    KEY_BP256: ("ec", "brainpoolP256r1"),
    KEY_BP320: ("ec", "brainpoolP320r1"),
    KEY_BP384: ("ec", "brainpoolP384r1"),
    KEY_BP512: ("ec", "brainpoolP512r1"),
    KEY_ED25519: ("ed25519",),
}

# ---------------------------------------------------------------------------------------------
# Enumerations (spec chapter 5 and 7)
# ---------------------------------------------------------------------------------------------

FORMAT_NUMERIC = 0x00
FORMAT_ALPHANUMERIC = 0x01
FORMAT_STRING = 0x02
FORMAT_BINARY = 0x03

PATTERN_TWO_IN_A_ROW = 0x01
PATTERN_THREE_IN_A_ROW = 0x02
PATTERN_SEQUENCE = 0x04
PATTERN_REPEATED = 0x08
PATTERN_MISSING_GROUP = 0x10

GROUPING_NONE = 0x00
GROUPING_SHARED = 0x01
GROUPING_SIGNATURE_PLUS_STANDARD = 0x02
GROUPING_UNIQUE = 0x03

INPUT_ANY = 0x00
INPUT_PROGRAMMATIC = 0x01
INPUT_TRUSTED_GUI = 0x02

PROTECTION_NONE = 0x00
PROTECTION_PIN = 0x01
PROTECTION_PUK = 0x02
PROTECTION_NOT_ALLOWED = 0x03  # "non-exportable" / "non-deletable"

BIOMETRIC_NONE = 0x00
BIOMETRIC_ALTERNATIVE = 0x01
BIOMETRIC_COMBINED = 0x02
BIOMETRIC_EXCLUSIVE = 0x03

APP_SIGNATURE = 0x00
APP_AUTHENTICATION = 0x01
APP_ENCRYPTION = 0x02
APP_UNIVERSAL = 0x03

PROTSTAT_PIN_PROTECTED = 0x01
PROTSTAT_PUK_PROTECTED = 0x02
PROTSTAT_PIN_BLOCKED = 0x04
PROTSTAT_PUK_BLOCKED = 0x08
PROTSTAT_DEVICE_PIN = 0x10

KEYBACKUP_IMPORTED = 0x01
KEYBACKUP_EXPORTED = 0x02

SUB_TYPE_EXTENSION = 0x00
SUB_TYPE_ENCRYPTED_EXTENSION = 0x01
SUB_TYPE_PROPERTY_BAG = 0x02
SUB_TYPE_LOGOTYPE = 0x03

# Status codes (spec 7.3)
OK = 0x00
ERROR_AUTHORIZATION = 0x01
ERROR_NOT_ALLOWED = 0x02
ERROR_STORAGE = 0x03
ERROR_MAC = 0x04
ERROR_CRYPTO = 0x05
ERROR_NO_SESSION = 0x06
ERROR_NO_KEY = 0x07
ERROR_ALGORITHM = 0x08
ERROR_OPTION = 0x09
ERROR_INTERNAL = 0x0A
ERROR_EXTERNAL = 0x0B
ERROR_USER_ABORT = 0x0C
ERROR_NOT_AVAILABLE = 0x0D

STATUS_NAMES = {
    0x00: "OK", 0x01: "ERROR_AUTHORIZATION", 0x02: "ERROR_NOT_ALLOWED", 0x03: "ERROR_STORAGE",
    0x04: "ERROR_MAC", 0x05: "ERROR_CRYPTO", 0x06: "ERROR_NO_SESSION", 0x07: "ERROR_NO_KEY",
    0x08: "ERROR_ALGORITHM", 0x09: "ERROR_OPTION", 0x0A: "ERROR_INTERNAL",
    0x0B: "ERROR_EXTERNAL", 0x0C: "ERROR_USER_ABORT", 0x0D: "ERROR_NOT_AVAILABLE",
}

# Method names as they enter MAC keys (conformance README: case-sensitive)
M_CREATE_PUK_POLICY = "createPUKPolicy"
M_CREATE_PIN_POLICY = "createPINPolicy"
M_CREATE_KEY_ENTRY = "createKeyEntry"
M_SET_CERTIFICATE_PATH = "setCertificatePath"
M_IMPORT_SYMMETRIC_KEY = "importSymmetricKey"
M_IMPORT_PRIVATE_KEY = "importPrivateKey"
M_ADD_EXTENSION = "addExtension"
M_POST_DELETE_KEY = "postDeleteKey"
M_POST_UNLOCK_KEY = "postUnlockKey"
M_POST_UPDATE_KEY = "postUpdateKey"
M_POST_CLONE_KEY_PROTECTION = "postCloneKeyProtection"
M_CLOSE_PROVISIONING_SESSION = "closeProvisioningSession"
DEVICE_ATTESTATION = "DeviceAttestation"
ENCRYPTION_KEY_LABEL = b"EncryptionKey"
TARGET_KEY_REFERENCE = b"TargetKeyReference"
ROLL_OVER_AUTHORIZATION = b"RollOverAuthorization"
ANONYMOUS_DEVICE_ID = b"Anonymous"

CURVES = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
    "secp256k1": ec.SECP256K1(),        # not an SKS curve: for rejection tests
}


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

class SksError(Exception):
    """A non-zero status returned by the device."""

    def __init__(self, status, message, method=""):
        self.status = status
        self.message = message
        self.method = method
        super().__init__(f"{method}: {STATUS_NAMES.get(status, hex(status))} "
                         f"(0x{status:02x}): {message}")


class ProtocolError(Exception):
    """The device's reply does not follow the wire format."""


class DeviceDied(Exception):
    """The device process exited or stopped answering."""


class IssuerCheckError(Exception):
    """Something the device returned does not verify (attestation, public key, ...)."""


# ---------------------------------------------------------------------------------------------
# Serialization (spec 7.1 "Data Types")
# ---------------------------------------------------------------------------------------------

def byte(v):
    return bytes([v & 0xFF]) if 0 <= v <= 0xFF else _range_error("byte", v)


def boolean(v):
    return b"\x01" if v else b"\x00"


def ushort(v):
    return struct.pack(">H", v)


def uint(v):
    return struct.pack(">I", v)


def arr(b):
    """byte[]: ushort length then the bytes."""
    b = bytes(b)
    if len(b) > 0xFFFF:
        _range_error("byte[] length", len(b))
    return ushort(len(b)) + b


def string(s):
    """string / uri / id: UTF-8 as a byte[]."""
    return arr(s.encode("utf-8") if isinstance(s, str) else s)


def blob(b):
    """blob: uint length then the bytes."""
    return uint(len(b)) + bytes(b)


def listof(items, encode):
    """A list on the wire: ushort count then the items."""
    return ushort(len(items)) + b"".join(encode(i) for i in items)


def _range_error(what, v):
    raise ValueError(f"{what} out of range: {v}")


class Reader:
    """Cursor over a reply; every read checks bounds."""

    def __init__(self, data, what=""):
        self.data = bytes(data)
        self.off = 0
        self.what = what

    def _take(self, n):
        if self.off + n > len(self.data):
            raise ProtocolError(f"{self.what}: reply truncated: wanted {n} bytes at offset "
                                f"{self.off} of {len(self.data)}: {self.data.hex()}")
        b = self.data[self.off:self.off + n]
        self.off += n
        return b

    def byte(self):
        return self._take(1)[0]

    def bool(self):
        v = self.byte()
        if v not in (0, 1):
            raise ProtocolError(f"{self.what}: bool byte 0x{v:02x} at offset {self.off - 1}")
        return v == 1

    def ushort(self):
        return struct.unpack(">H", self._take(2))[0]

    def uint(self):
        return struct.unpack(">I", self._take(4))[0]

    def array(self):
        return self._take(self.ushort())

    def blob(self):
        return self._take(self.uint())

    def string(self):
        raw = self.array()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"{self.what}: invalid UTF-8 in string {raw!r}") from e

    def list(self, read_item):
        return [read_item() for _ in range(self.ushort())]

    def end(self):
        if self.off != len(self.data):
            raise ProtocolError(f"{self.what}: {len(self.data) - self.off} trailing bytes in "
                                f"reply: {self.data[self.off:].hex()}")


# ---------------------------------------------------------------------------------------------
# Byte builders named after the specification
# ---------------------------------------------------------------------------------------------

def hmac_sha256(key, data):
    return hmac.new(bytes(key), bytes(data), hashlib.sha256).digest()


def kdf_input(client_session_id, server_session_id, issuer_uri, device_id):
    """createProvisioningSession: the KDF data clientSessionId || serverSessionId ||
    issuerUri || Device ID (all length-prefixed)."""
    return (string(client_session_id) + string(server_session_id) + string(issuer_uri)
            + arr(device_id))


def session_key(z, client_session_id, server_session_id, issuer_uri, device_id):
    """sessionKey = HMAC-SHA256(Z, clientSessionId || serverSessionId || issuerUri ||
    Device ID)."""
    return hmac_sha256(z, kdf_input(client_session_id, server_session_id, issuer_uri,
                                    device_id))


def session_attestation_data(client_session_id, server_session_id, issuer_uri, device_id,
                             session_key_algorithm, privacy_enabled, server_ephemeral_key,
                             client_ephemeral_key, key_management_key, client_time,
                             session_life_time, session_key_limit, server_certificate):
    """createProvisioningSession: the data signed by the attestation key."""
    return (kdf_input(client_session_id, server_session_id, issuer_uri, device_id)
            + string(session_key_algorithm) + boolean(privacy_enabled)
            + arr(server_ephemeral_key) + arr(client_ephemeral_key)
            + arr(key_management_key or b"") + uint(client_time)
            + ushort(session_life_time) + ushort(session_key_limit)
            + arr(server_certificate))


def mac_key(session_key_, method_name, counter):
    """MAC Operations: the HMAC key sessionKey || MethodName || macSequenceCounter."""
    return bytes(session_key_) + method_name.encode("ascii") + ushort(counter)


def method_mac(session_key_, method_name, counter, data):
    """mac = HMAC-SHA256(sessionKey || MethodName || macSequenceCounter, Data)."""
    return hmac_sha256(mac_key(session_key_, method_name, counter), data)


def device_attestation(session_key_, counter, data):
    """Attestations: a MAC with MethodName "DeviceAttestation"."""
    return method_mac(session_key_, DEVICE_ATTESTATION, counter, data)


def encryption_key(session_key_):
    """EncryptionKey = HMAC-SHA256(sessionKey, "EncryptionKey")."""
    return hmac_sha256(session_key_, ENCRYPTION_KEY_LABEL)


def encrypted_data(session_key_, plaintext, iv=None):
    """Encrypted Data: IV || AES-256-CBC(EncryptionKey, PKCS#7 padded plaintext)."""
    iv = secrets.token_bytes(16) if iv is None else bytes(iv)
    padder = sympadding.PKCS7(128).padder()
    padded = padder.update(bytes(plaintext)) + padder.finalize()
    enc = Cipher(algorithms.AES(encryption_key(session_key_)), modes.CBC(iv)).encryptor()
    return iv + enc.update(padded) + enc.finalize()


def decrypt_data(session_key_, data):
    """Inverse of encrypted_data (used by the self-tests)."""
    dec = Cipher(algorithms.AES(encryption_key(session_key_)), modes.CBC(data[:16])).decryptor()
    padded = dec.update(data[16:]) + dec.finalize()
    unpadder = sympadding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def create_puk_policy_mac_data(id_, encrypted_puk, format_, retry_limit):
    """createPukPolicy: Data = id || encryptedPuk || format || retryLimit."""
    return string(id_) + arr(encrypted_puk) + byte(format_) + ushort(retry_limit)


def create_pin_policy_mac_data(id_, puk_reference, user_defined, user_modifiable, format_,
                               retry_limit, grouping, pattern_restrictions, min_length,
                               max_length, input_method):
    """createPinPolicy: Data = id || PUKReference || userDefined || userModifiable || format ||
    retryLimit || grouping || patternRestrictions || minLength || maxLength || inputMethod."""
    return (string(id_) + string(puk_reference or "") + boolean(user_defined)
            + boolean(user_modifiable) + byte(format_) + ushort(retry_limit) + byte(grouping)
            + byte(pattern_restrictions) + ushort(min_length) + ushort(max_length)
            + byte(input_method))


def create_key_entry_mac_data(id_, key_entry_algorithm, server_seed, pin_policy_reference,
                              pin_value_reference, device_pin_protection, enable_pin_caching,
                              biometric_protection, export_protection, delete_protection,
                              app_usage, friendly_name, key_algorithm, key_parameters,
                              endorsed_algorithms):
    """createKeyEntry: Data = id || keyEntryAlgorithm || serverSeed || PINPolicyReference ||
    PINValueReference || devicePinProtection || enablePinCaching || biometricProtection ||
    exportProtection || deleteProtection || appUsage || friendlyName || keyAlgorithm ||
    keyParameters || endorsedAlgorithm...

    pin_value_reference is the encrypted PIN (issuer-set PIN) or None (no PIN policy or a
    user-defined PIN), which enters the MAC as the empty string."""
    return (string(id_) + string(key_entry_algorithm) + arr(server_seed or b"")
            + string(pin_policy_reference or "")
            + (arr(pin_value_reference) if pin_value_reference is not None else string(""))
            + boolean(device_pin_protection) + boolean(enable_pin_caching)
            + byte(biometric_protection) + byte(export_protection) + byte(delete_protection)
            + byte(app_usage) + string(friendly_name or "") + string(key_algorithm)
            + arr(key_parameters or b"")
            + b"".join(string(a) for a in endorsed_algorithms))


def key_attestation_data(public_key, mac):
    """key.1 attestation: Data = publicKey || mac."""
    return arr(public_key) + arr(mac)


def set_certificate_path_mac_data(public_key, id_, certificates):
    """setCertificatePath: Data = keyHandle.publicKey || keyHandle.id || certificate..."""
    return arr(public_key) + string(id_) + b"".join(arr(c) for c in certificates)


def import_key_mac_data(ee_certificate, encrypted_key):
    """importSymmetricKey / importPrivateKey: Data = End-Entity Certificate || encryptedKey."""
    return arr(ee_certificate) + arr(encrypted_key)


def add_extension_mac_data(ee_certificate, type_, sub_type, qualifier, extension_data):
    """addExtension: Data = End-Entity Certificate || type || subType || qualifier ||
    extensionData (as sent, i.e. encrypted for encrypted extensions)."""
    return (arr(ee_certificate) + string(type_) + byte(sub_type) + string(qualifier or "")
            + blob(extension_data))


def post_target_mac_data(authorization):
    """postDeleteKey / postUnlockKey: Data = authorization."""
    return arr(authorization)


def post_new_key_mac_data(ee_certificate, authorization):
    """postUpdateKey / postCloneKeyProtection: Data = End-Entity Certificate ||
    authorization."""
    return arr(ee_certificate) + arr(authorization)


def close_mac_data(client_session_id, server_session_id, issuer_uri, nonce):
    """closeProvisioningSession: Data = clientSessionId || serverSessionId || issuerUri ||
    nonce."""
    return (string(client_session_id) + string(server_session_id) + string(issuer_uri)
            + arr(nonce))


def close_attestation_data(nonce):
    """closeProvisioningSession attestation: Data = nonce."""
    return arr(nonce)


def target_key_reference(session_key_current, device_id, ee_certificate_target):
    """Target Key Reference, the signed data: "TargetKeyReference" ||
    HMAC-SHA256(sessionKey_current || Device ID, End-Entity Certificate_target), all verbatim
    (no length indicators)."""
    return TARGET_KEY_REFERENCE + hmac_sha256(bytes(session_key_current) + bytes(device_id),
                                              ee_certificate_target)


def roll_over_authorization_data(new_key_management_key):
    """updateKeyManagementKey, the signed data: "RollOverAuthorization" || new key (SPKI)."""
    return ROLL_OVER_AUTHORIZATION + bytes(new_key_management_key)


def property_bag(properties):
    """propertyBags normalization: for each (name, value, writable):
    byte[] name || bool writable || byte[] value, concatenated."""
    out = b""
    for name, value, writable in properties:
        out += string(name) + boolean(writable) + string(value)
    return out


def parse_property_bag(data):
    """Inverse of property_bag: list of (name, value, writable)."""
    r = Reader(data, "property bag")
    props = []
    while r.off < len(data):
        name = r.string()
        writable = r.bool()
        value = r.string()
        props.append((name, value, writable))
    return props


def sign_with_key_management_key(kmk_private, data):
    """Sign for Target Key Reference / roll-over: RSA PKCS#1 v1.5 SHA-256, or ECDSA SHA-256
    with the raw r || s encoding."""
    if isinstance(kmk_private, rsa.RSAPrivateKey):
        return kmk_private.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(kmk_private, ec.EllipticCurvePrivateKey):
        der = kmk_private.sign(data, ec.ECDSA(hashes.SHA256()))
        return ecdsa_der_to_raw(der, kmk_private.curve.key_size)
    raise TypeError(f"unsupported key management key {type(kmk_private)}")


def spki(public_key):
    """SubjectPublicKeyInfo DER of a cryptography public key."""
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def pkcs8(private_key):
    return private_key.private_bytes(serialization.Encoding.DER,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


def ecdsa_der_to_raw(der, key_size_bits):
    r, s = utils.decode_dss_signature(der)
    n = (key_size_bits + 7) // 8
    return r.to_bytes(n, "big") + s.to_bytes(n, "big")


def ecdsa_raw_to_der(raw):
    if len(raw) % 2:
        raise IssuerCheckError(f"raw ECDSA signature of odd length {len(raw)}")
    h = len(raw) // 2
    return utils.encode_dss_signature(int.from_bytes(raw[:h], "big"),
                                      int.from_bytes(raw[h:], "big"))


# ---------------------------------------------------------------------------------------------
# Minimal DER handling (for SPKIs cryptography cannot load and for certificate splicing)
# ---------------------------------------------------------------------------------------------

def der_length(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def der_tlv(tag, content):
    return bytes([tag]) + der_length(len(content)) + bytes(content)


def der_read(buf, off=0):
    """Returns (tag, content start, content end) of the element at off."""
    tag = buf[off]
    first = buf[off + 1]
    off += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        length = int.from_bytes(buf[off:off + n], "big")
        off += n
    if off + length > len(buf):
        raise ValueError("DER element overruns its buffer")
    return tag, off, off + length


def der_children(content):
    """Splits the content of a constructed element into [(tag, whole element, content)]."""
    items = []
    off = 0
    while off < len(content):
        tag, start, end = der_read(content, off)
        items.append((tag, content[off:end], content[start:end]))
        off = end
    return items


OID_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")
OID_RSA_ENCRYPTION = bytes.fromhex("06092a864886f70d010101")
OID_ED25519 = bytes.fromhex("06032b6570")
OID_BRAINPOOL_P320R1 = bytes.fromhex("06092b2403030208010109")


def spki_parts(spki_der):
    """(algorithm OID element, parameters element or None, public key bytes)."""
    tag, s, e = der_read(spki_der)
    if tag != 0x30 or e != len(spki_der):
        raise ValueError("SPKI is not one DER SEQUENCE")
    (t1, _alg, alg_content), (t2, _bits, bits_content) = der_children(spki_der[s:e])
    if t1 != 0x30 or t2 != 0x03 or bits_content[0] != 0:
        raise ValueError("malformed SPKI")
    parts = der_children(alg_content)
    oid = parts[0][1]
    params = parts[1][1] if len(parts) > 1 else None
    return oid, params, bits_content[1:]


# ---------------------------------------------------------------------------------------------
# brainpoolP320r1 (RFC 5639) in pure Python: cryptography 38 has no such curve
# ---------------------------------------------------------------------------------------------

class _PrimeCurve:
    def __init__(self, name, p, a, b, gx, gy, n, oid_element):
        self.name, self.p, self.a, self.b, self.n = name, p, a, b, n
        self.g = (gx, gy)
        self.size = (p.bit_length() + 7) // 8
        self.oid_element = oid_element
        if not self.on_curve(self.g):
            raise AssertionError(f"{name}: generator not on curve")

    def on_curve(self, pt):
        x, y = pt
        return (y * y - (x * x * x + self.a * x + self.b)) % self.p == 0

    def add(self, p1, p2):
        if p1 is None:
            return p2
        if p2 is None:
            return p1
        (x1, y1), (x2, y2) = p1, p2
        if x1 == x2 and (y1 + y2) % self.p == 0:
            return None
        if p1 == p2:
            lam = (3 * x1 * x1 + self.a) * pow(2 * y1, -1, self.p) % self.p
        else:
            lam = (y2 - y1) * pow(x2 - x1, -1, self.p) % self.p
        x3 = (lam * lam - x1 - x2) % self.p
        return x3, (lam * (x1 - x3) - y1) % self.p

    def mul(self, k, pt):
        result = None
        addend = pt
        while k:
            if k & 1:
                result = self.add(result, addend)
            addend = self.add(addend, addend)
            k >>= 1
        return result

    def point_from_spki(self, spki_der):
        oid, params, key = spki_parts(spki_der)
        if oid != OID_EC_PUBLIC_KEY or params != self.oid_element:
            raise ValueError(f"not a {self.name} SPKI")
        if len(key) != 1 + 2 * self.size or key[0] != 4:
            raise ValueError(f"{self.name} SPKI point is not uncompressed/fixed size")
        pt = (int.from_bytes(key[1:1 + self.size], "big"), int.from_bytes(key[1 + self.size:], "big"))
        if not self.on_curve(pt):
            raise ValueError(f"{self.name} public point not on the curve")
        return pt

    def spki(self, pt):
        point = b"\x04" + pt[0].to_bytes(self.size, "big") + pt[1].to_bytes(self.size, "big")
        alg = der_tlv(0x30, OID_EC_PUBLIC_KEY + self.oid_element)
        return der_tlv(0x30, alg + der_tlv(0x03, b"\x00" + point))

    def ecdsa_verify(self, pt, digest, r, s):
        if not (1 <= r < self.n and 1 <= s < self.n):
            return False
        e = int.from_bytes(digest, "big")
        excess = 8 * len(digest) - self.n.bit_length()
        if excess > 0:
            e >>= excess
        w = pow(s, -1, self.n)
        x = self.add(self.mul(e * w % self.n, self.g), self.mul(r * w % self.n, pt))
        return x is not None and x[0] % self.n == r


BRAINPOOL_P320R1 = _PrimeCurve(
    "brainpoolP320r1",
    p=int("d35e472036bc4fb7e13c785ed201e065f98fcfa6f6f40def4f92b9ec7893ec28fcd412b1f1b32e27", 16),
    a=int("3ee30b568fbab0f883ccebd46d3f3bb8a2a73513f5eb79da66190eb085ffa9f492f375a97d860eb4", 16),
    b=int("520883949dfdbc42d3ad198640688a6fe13f41349554b49acc31dccd884539816f5eb4ac8fb1f1a6", 16),
    gx=int("43bd7e9afb53d8b85289bcc48ee5bfe6f20137d10a087eb6e7871e2a10a599c710af8d0d39e20611", 16),
    gy=int("14fdd05545ec1cc8ab4093247f77275e0743ffed117182eaa9c77877aaac6ac7d35245d1692e8ee1", 16),
    n=int("d35e472036bc4fb7e13c785ed201e065f98fcfa5b68f12a32d482ec7ee8658e98691555b44c59311", 16),
    oid_element=OID_BRAINPOOL_P320R1,
)


# ---------------------------------------------------------------------------------------------
# Public key inspection
# ---------------------------------------------------------------------------------------------

@dataclass
class PublicKeyInfo:
    kind: str                    # "rsa" | "ec" | "ed25519"
    bits: int = 0                # RSA modulus size or EC field size
    exponent: int = 0            # RSA
    curve: str = ""              # EC curve name as in KEY_ALGORITHMS
    key: object = None           # cryptography public key, None for brainpoolP320r1
    point: tuple = None          # brainpoolP320r1 only


def load_public_key(spki_der):
    """Loads an SPKI; brainpoolP320r1 keys come back with key=None and the point set."""
    spki_der = bytes(spki_der)
    oid, params, _ = spki_parts(spki_der)
    if oid == OID_EC_PUBLIC_KEY and params == OID_BRAINPOOL_P320R1:
        return PublicKeyInfo("ec", 320, curve="brainpoolP320r1",
                             point=BRAINPOOL_P320R1.point_from_spki(spki_der))
    key = serialization.load_der_public_key(spki_der)
    if isinstance(key, rsa.RSAPublicKey):
        return PublicKeyInfo("rsa", key.key_size, exponent=key.public_numbers().e, key=key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return PublicKeyInfo("ec", key.curve.key_size, curve=key.curve.name, key=key)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return PublicKeyInfo("ed25519", 255, key=key)
    raise IssuerCheckError(f"unexpected public key type {type(key)}")


def canonical_spki(spki_der):
    """Re-encodes an SPKI the strict way the specification wants (named curve, uncompressed
    point; rsaEncryption with NULL parameters)."""
    info = load_public_key(spki_der)
    if info.key is None:
        return BRAINPOOL_P320R1.spki(info.point)
    return spki(info.key)


def check_public_key(spki_der, key_algorithm, key_parameters=b""):
    """The issuer's check that a generated key complies with the request; raises
    IssuerCheckError."""
    spki_der = bytes(spki_der)
    try:
        canon = canonical_spki(spki_der)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise IssuerCheckError(f"public key does not parse: {e}: {spki_der.hex()}") from e
    if canon != spki_der:
        raise IssuerCheckError(f"public key is not in the strict SPKI encoding: got "
                               f"{spki_der.hex()} expected {canon.hex()}")
    info = load_public_key(spki_der)
    want = KEY_ALGORITHMS.get(key_algorithm)
    if want is None:
        return info
    if want[0] != info.kind:
        raise IssuerCheckError(f"{key_algorithm}: got a {info.kind} key")
    if want[0] == "rsa":
        exp = int.from_bytes(key_parameters, "big") if want[2] else 65537
        if info.bits != want[1] or info.exponent != exp:
            raise IssuerCheckError(f"{key_algorithm}: got RSA {info.bits} bits e={info.exponent},"
                                   f" wanted {want[1]} bits e={exp}")
    elif want[0] == "ec" and info.curve != want[1]:
        raise IssuerCheckError(f"{key_algorithm}: got curve {info.curve}")
    return info


# ---------------------------------------------------------------------------------------------
# Checking device results with an independent implementation
# ---------------------------------------------------------------------------------------------

SIG_HASHES = {
    SIG_RSA_SHA256: hashes.SHA256, SIG_RSA_SHA384: hashes.SHA384, SIG_RSA_SHA512: hashes.SHA512,
    SIG_ECDSA_SHA256: hashes.SHA256, SIG_ECDSA_SHA384: hashes.SHA384,
    SIG_ECDSA_SHA512: hashes.SHA512,
    SIG_RSA_PSS_SHA256: hashes.SHA256, SIG_RSA_PSS_SHA384: hashes.SHA384,
    SIG_RSA_PSS_SHA512: hashes.SHA512,
}
_HASH_BY_SIZE = {20: hashes.SHA1, 28: hashes.SHA224, 32: hashes.SHA256, 48: hashes.SHA384,
                 64: hashes.SHA512}


def hash_for(algorithm):
    """The hash class signHashedData's data must have been made with (None: any)."""
    return SIG_HASHES.get(algorithm)


def digest(hash_cls, data):
    h = hashes.Hash(hash_cls())
    h.update(data)
    return h.finalize()


def verify_signature(spki_der, algorithm, data, signature):
    """Verifies a signHashedData result; raises IssuerCheckError when it does not verify."""
    info = load_public_key(spki_der)
    try:
        if algorithm in (SIG_ECDSA_SHA256, SIG_ECDSA_SHA384, SIG_ECDSA_SHA512, SIG_ECDSA_NONE):
            if info.kind != "ec":
                raise IssuerCheckError(f"{algorithm} on a {info.kind} key")
            half = (info.bits + 7) // 8
            if len(signature) != 2 * half:
                raise IssuerCheckError(f"ECDSA signature is {len(signature)} bytes, raw r||s "
                                       f"for {info.curve} is {2 * half}")
            r = int.from_bytes(signature[:half], "big")
            s = int.from_bytes(signature[half:], "big")
            if info.key is None:
                if not BRAINPOOL_P320R1.ecdsa_verify(info.point, data, r, s):
                    raise IssuerCheckError(f"{algorithm} signature does not verify")
                return
            h = _HASH_BY_SIZE[len(data)]
            info.key.verify(utils.encode_dss_signature(r, s), data,
                            ec.ECDSA(utils.Prehashed(h())))
        elif algorithm in (SIG_RSA_SHA256, SIG_RSA_SHA384, SIG_RSA_SHA512):
            _check_rsa_len(info, signature)
            h = SIG_HASHES[algorithm]
            info.key.verify(signature, data, padding.PKCS1v15(), utils.Prehashed(h()))
        elif algorithm in (SIG_RSA_PSS_SHA256, SIG_RSA_PSS_SHA384, SIG_RSA_PSS_SHA512):
            _check_rsa_len(info, signature)
            h = SIG_HASHES[algorithm]
            info.key.verify(signature, data,
                            padding.PSS(mgf=padding.MGF1(h()), salt_length=h.digest_size),
                            utils.Prehashed(h()))
        elif algorithm == SIG_RSA_NONE:
            _check_rsa_len(info, signature)
            nums = info.key.public_numbers()
            k = (info.bits + 7) // 8
            em = pow(int.from_bytes(signature, "big"), nums.e, nums.n).to_bytes(k, "big")
            want = b"\x00\x01" + b"\xff" * (k - 3 - len(data)) + b"\x00" + data
            if em != want:
                raise IssuerCheckError(f"rsa.pkcs1.none: EMSA mismatch: got {em.hex()}")
        elif algorithm == SIG_ED25519:
            if info.kind != "ed25519":
                raise IssuerCheckError(f"ed25519 signature on a {info.kind} key")
            info.key.verify(signature, data)
        else:
            raise ValueError(f"no verifier for {algorithm}")
    except InvalidSignature as e:
        raise IssuerCheckError(f"{algorithm} signature does not verify: {signature.hex()}") from e


def _check_rsa_len(info, signature):
    if info.kind != "rsa":
        raise IssuerCheckError(f"RSA signature on a {info.kind} key")
    k = (info.bits + 7) // 8
    if len(signature) != k:
        raise IssuerCheckError(f"RSA signature is {len(signature)} bytes, modulus {k}")


def rsa_encrypt(spki_der, algorithm, plaintext):
    """Encrypts for asymmetricKeyDecrypt."""
    key = load_public_key(spki_der).key
    if algorithm == ASYM_RSA_PKCS1:
        return key.encrypt(plaintext, padding.PKCS1v15())
    h = {ASYM_RSA_OAEP_SHA1: hashes.SHA1, ASYM_RSA_OAEP_SHA256: hashes.SHA256}[algorithm]
    return key.encrypt(plaintext, padding.OAEP(mgf=padding.MGF1(h()), algorithm=h(), label=None))


OAEP_HASHES = {"SHA1": hashes.SHA1, "SHA224": hashes.SHA224, "SHA256": hashes.SHA256,
               "SHA384": hashes.SHA384, "SHA512": hashes.SHA512}


def oaep_parameters(oaep_digest, mgf1_digest, label=b""):
    """asymmetricKeyDecrypt "parameters" of rsa.oaep: string oaepDigest, string mgf1Digest,
    byte[] label (docs/algorithms.md)."""
    return string(oaep_digest) + string(mgf1_digest) + arr(label)


def rsa_encrypt_oaep(spki_der, oaep_digest, mgf1_digest, label, plaintext):
    """OAEP with any digest, MGF1 digest and label (None or b"": no label), by `cryptography`."""
    key = load_public_key(spki_der).key
    return key.encrypt(plaintext, padding.OAEP(mgf=padding.MGF1(OAEP_HASHES[mgf1_digest]()),
                                               algorithm=OAEP_HASHES[oaep_digest](), label=label or None))


def ecdh_peer(device_spki):
    """A fresh peer key on the device key's curve: (peer SPKI, expected shared secret Z)."""
    info = load_public_key(device_spki)
    if info.key is None:
        c = BRAINPOOL_P320R1
        d = secrets.randbelow(c.n - 1) + 1
        z = c.mul(d, info.point)[0].to_bytes(c.size, "big")
        return c.spki(c.mul(d, c.g)), z
    peer = ec.generate_private_key(info.key.curve)
    return spki(peer.public_key()), peer.exchange(ec.ECDH(), info.key)


HMAC_HASHES = {HMAC_SHA1: hashlib.sha1, HMAC_SHA256: hashlib.sha256,
               HMAC_SHA384: hashlib.sha384, HMAC_SHA512: hashlib.sha512}


def reference_hmac(algorithm, key, data):
    return hmac.new(key, data, HMAC_HASHES[algorithm]).digest()


def aes_cbc_pkcs7(key, iv, data, encrypt):
    c = Cipher(algorithms.AES(key), modes.CBC(iv))
    if encrypt:
        p = sympadding.PKCS7(128).padder()
        e = c.encryptor()
        return e.update(p.update(data) + p.finalize()) + e.finalize()
    d = c.decryptor()
    u = sympadding.PKCS7(128).unpadder()
    return u.update(d.update(data) + d.finalize()) + u.finalize()


def aes_ecb(key, data, encrypt):
    c = Cipher(algorithms.AES(key), modes.ECB())
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def verify_device_attestation(device_certificate_der, data, signature):
    """E2ES session attestation: ECDSA (raw r||s) or RSA PKCS#1 v1.5, SHA-256."""
    cert = x509.load_der_x509_certificate(device_certificate_der)
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            half = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * half:
                raise IssuerCheckError(f"session attestation is {len(signature)} bytes; raw "
                                       f"r||s on {key.curve.name} is {2 * half}")
            key.verify(ecdsa_raw_to_der(signature), data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise IssuerCheckError(f"unsupported device key {type(key)}")
    except InvalidSignature as e:
        raise IssuerCheckError("session attestation signature does not verify") from e


# ---------------------------------------------------------------------------------------------
# Certificate authority
# ---------------------------------------------------------------------------------------------

def _utcnow():
    return datetime.datetime.utcnow().replace(microsecond=0)


class CertificateAuthority:
    """A throw-away EC P-256 CA that certifies generated public keys."""

    def __init__(self, common_name="sks Python issuer test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _utcnow()
        self.name = name
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256()))
        self.der = self.certificate.public_bytes(serialization.Encoding.DER)

    def _builder(self, common_name):
        now = _utcnow()
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(self.name)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))

    def issue(self, spki_der, common_name="SKS key"):
        """An end-entity certificate (DER) for any SPKI, including keys cryptography cannot
        load (brainpoolP320r1): those are spliced into a certificate made for a stand-in key
        and the result is re-signed."""
        spki_der = bytes(spki_der)
        builder = self._builder(common_name)
        try:
            key = serialization.load_der_public_key(spki_der)
        except (ValueError, UnsupportedAlgorithm):
            key = None
        if key is not None:
            cert = builder.public_key(key).sign(self.key, hashes.SHA256())
            return cert.public_bytes(serialization.Encoding.DER)
        stand_in = ec.generate_private_key(ec.SECP256R1()).public_key()
        cert = builder.public_key(stand_in).sign(self.key, hashes.SHA256())
        tbs = cert.tbs_certificate_bytes
        _, s, e = der_read(tbs)
        content = tbs[s:e]
        old = spki(stand_in)
        if content.count(old) != 1:
            raise AssertionError("stand-in SPKI not found exactly once in the TBS")
        new_tbs = der_tlv(0x30, content.replace(old, spki_der))
        der = cert.public_bytes(serialization.Encoding.DER)
        _, s, e = der_read(der)
        sig_alg = der_children(der[s:e])[1][1]
        signature = self.key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
        out = der_tlv(0x30, new_tbs + sig_alg + der_tlv(0x03, b"\x00" + signature))
        x509.load_der_x509_certificate(out)  # must still parse
        return out


# ---------------------------------------------------------------------------------------------
# The device: one `sks serve --stdio` process
# ---------------------------------------------------------------------------------------------

@dataclass
class DeviceInfo:
    api_level: int
    device_type: int
    update_url: str
    vendor_name: str
    vendor_description: str
    certificates: List[bytes]
    algorithms: List[str]
    crypto_data_size: int
    extension_data_size: int
    device_pin_support: bool
    biometric_support: bool


@dataclass
class ProvisioningSessionReply:
    client_session_id: str
    client_ephemeral_key: bytes
    attestation: bytes
    provisioning_handle: int


@dataclass
class EnumeratedSession:
    provisioning_handle: int
    session_key_algorithm: str
    privacy_enabled: bool
    key_management_key: bytes
    client_time: int
    session_life_time: int
    server_session_id: str
    client_session_id: str
    issuer_uri: str


@dataclass
class KeyData:
    key_handle: int
    public_key: bytes
    attestation: bytes


@dataclass
class KeyAttributes:
    symmetric_key_length: int
    certificate_path: List[bytes]
    app_usage: int
    friendly_name: str
    endorsed_algorithms: List[str]
    extension_types: List[str]


@dataclass
class KeyProtectionInfo:
    protection_status: int
    puk_format: int
    puk_retry_limit: int
    puk_error_count: int
    user_defined: bool
    user_modifiable: bool
    format: int
    retry_limit: int
    grouping: int
    pattern_restrictions: int
    min_length: int
    max_length: int
    input_method: int
    pin_error_count: int
    enable_pin_caching: bool
    biometric_protection: int
    export_protection: int
    delete_protection: int
    key_backup: int


@dataclass
class Extension:
    sub_type: int
    qualifier: str
    extension_data: bytes


DEFAULT_TIMEOUT = 120.0


class Device:
    """An `sks --store STORE serve --stdio` process speaking the framed wire format."""

    def __init__(self, binary, store, *, stderr_path=None, timeout=DEFAULT_TIMEOUT):
        self.binary = str(binary)
        self.store = str(store)
        self.timeout = timeout
        self.stderr_path = str(stderr_path) if stderr_path else None
        self._stderr = open(self.stderr_path, "ab") if self.stderr_path else subprocess.DEVNULL
        self.proc = subprocess.Popen([self.binary, "--store", self.store, "serve", "--stdio"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr)
        self.last_request = None
        self.last_reply = None
        self._info = None

    # -- framing -------------------------------------------------------------------------------

    def _stderr_tail(self):
        if not self.stderr_path:
            return ""
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def _died(self, what):
        rc = self.proc.poll()
        raise DeviceDied(f"{what}; device exit status {rc}; stderr tail:\n{self._stderr_tail()}")

    def _read_exact(self, n):
        fd = self.proc.stdout.fileno()
        out = b""
        while len(out) < n:
            ready, _, _ = select.select([fd], [], [], self.timeout)
            if not ready:
                self._died(f"no reply within {self.timeout} s")
            chunk = os.read(fd, n - len(out))
            if not chunk:
                self._died("device closed its output")
            out += chunk
        return out

    def transact(self, request):
        """Sends one framed request, returns the raw reply (status byte first)."""
        request = bytes(request)
        self.last_request = request
        try:
            self.proc.stdin.write(struct.pack(">I", len(request)) + request)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._died("device closed its input")
        length = struct.unpack(">I", self._read_exact(4))[0]
        if length > 16 * 1024 * 1024:
            raise ProtocolError(f"reply frame length {length} exceeds 16 MiB")
        reply = self._read_exact(length)
        self.last_reply = reply
        return reply

    def call(self, method_id, payload, name):
        reply = self.transact(bytes([method_id]) + bytes(payload))
        if not reply:
            raise ProtocolError(f"{name}: empty reply")
        status = reply[0]
        if status != OK:
            r = Reader(reply[1:], name)
            message = r.string()
            r.end()
            if len(message.encode("utf-8")) > 2000:
                raise ProtocolError(f"{name}: error message longer than 2000 bytes")
            raise SksError(status, message, name)
        return Reader(reply[1:], name)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._stderr is not subprocess.DEVNULL:
            self._stderr.close()
            self._stderr = subprocess.DEVNULL

    # -- provisioning API ----------------------------------------------------------------------

    def get_device_info(self):
        r = self.call(1, b"", "getDeviceInfo")
        api_level = r.ushort()
        device_type = r.byte()
        update_url = r.string()
        vendor_name = r.string()
        vendor_description = r.string()
        certificates = r.list(r.array)
        algorithms_ = r.list(r.string)
        crypto_data_size = r.uint()
        extension_data_size = r.uint()
        device_pin_support = r.bool()
        biometric_support = r.bool()
        r.end()
        return DeviceInfo(api_level, device_type, update_url, vendor_name, vendor_description,
                          certificates, algorithms_, crypto_data_size, extension_data_size,
                          device_pin_support, biometric_support)

    def device_info(self):
        """Cached getDeviceInfo."""
        if self._info is None:
            self._info = self.get_device_info()
        return self._info

    def create_provisioning_session(self, session_key_algorithm, privacy_enabled,
                                    server_session_id, server_ephemeral_key, issuer_uri,
                                    key_management_key, client_time, session_life_time,
                                    session_key_limit, server_certificate):
        payload = (string(session_key_algorithm) + boolean(privacy_enabled)
                   + string(server_session_id) + arr(server_ephemeral_key)
                   + string(issuer_uri) + arr(key_management_key or b"") + uint(client_time)
                   + ushort(session_life_time) + ushort(session_key_limit)
                   + arr(server_certificate))
        r = self.call(2, payload, "createProvisioningSession")
        out = ProvisioningSessionReply(r.string(), r.array(), r.array(), r.uint())
        r.end()
        return out

    def close_provisioning_session(self, provisioning_handle, nonce, mac):
        r = self.call(3, uint(provisioning_handle) + arr(nonce) + arr(mac),
                      "closeProvisioningSession")
        attestation = r.array()
        r.end()
        return attestation

    def enumerate_provisioning_sessions(self, provisioning_handle, provisioning_state):
        """Returns None at the end of the enumeration."""
        r = self.call(4, uint(provisioning_handle) + boolean(provisioning_state),
                      "enumerateProvisioningSessions")
        handle = r.uint()
        if handle == 0:
            r.end()
            return None
        s = EnumeratedSession(handle, r.string(), r.bool(), r.array(), r.uint(), r.uint(),
                              r.string(), r.string(), r.string())
        r.end()
        return s

    def list_sessions(self, open_sessions):
        """All sessions of one state (True: open, False: closed)."""
        out = []
        handle = 0
        while True:
            s = self.enumerate_provisioning_sessions(handle, open_sessions)
            if s is None:
                return out
            if any(x.provisioning_handle == s.provisioning_handle for x in out):
                raise ProtocolError(f"enumerateProvisioningSessions loops at {s.provisioning_handle}")
            out.append(s)
            handle = s.provisioning_handle

    def all_sessions(self):
        return self.list_sessions(True) + self.list_sessions(False)

    def abort_provisioning_session(self, provisioning_handle):
        self.call(5, uint(provisioning_handle), "abortProvisioningSession").end()

    def update_key_management_key(self, provisioning_handle, key_management_key, authorization):
        self.call(7, uint(provisioning_handle) + arr(key_management_key) + arr(authorization),
                  "updateKeyManagementKey").end()

    def create_puk_policy(self, provisioning_handle, id_, encrypted_puk, format_, retry_limit,
                          mac):
        r = self.call(8, uint(provisioning_handle) + string(id_) + arr(encrypted_puk)
                      + byte(format_) + ushort(retry_limit) + arr(mac), "createPukPolicy")
        h = r.uint()
        r.end()
        return h

    def create_pin_policy(self, provisioning_handle, id_, puk_policy_handle, user_defined,
                          user_modifiable, format_, retry_limit, grouping, pattern_restrictions,
                          min_length, max_length, input_method, mac):
        payload = (uint(provisioning_handle) + string(id_) + uint(puk_policy_handle)
                   + boolean(user_defined) + boolean(user_modifiable) + byte(format_)
                   + ushort(retry_limit) + byte(grouping) + byte(pattern_restrictions)
                   + ushort(min_length) + ushort(max_length) + byte(input_method) + arr(mac))
        r = self.call(9, payload, "createPinPolicy")
        h = r.uint()
        r.end()
        return h

    def create_key_entry(self, provisioning_handle, id_, key_entry_algorithm, server_seed,
                         device_pin_protection, pin_policy_handle, pin_value, enable_pin_caching,
                         biometric_protection, export_protection, delete_protection, app_usage,
                         friendly_name, key_algorithm, key_parameters, endorsed_algorithms, mac):
        payload = (uint(provisioning_handle) + string(id_) + string(key_entry_algorithm)
                   + arr(server_seed or b"") + boolean(device_pin_protection)
                   + uint(pin_policy_handle) + arr(pin_value or b"")
                   + boolean(enable_pin_caching) + byte(biometric_protection)
                   + byte(export_protection) + byte(delete_protection) + byte(app_usage)
                   + string(friendly_name or "") + string(key_algorithm)
                   + arr(key_parameters or b"") + listof(list(endorsed_algorithms), string)
                   + arr(mac))
        r = self.call(10, payload, "createKeyEntry")
        out = KeyData(r.uint(), r.array(), r.array())
        r.end()
        return out

    def get_key_handle(self, provisioning_handle, id_):
        r = self.call(11, uint(provisioning_handle) + string(id_), "getKeyHandle")
        h = r.uint()
        r.end()
        return h

    def set_certificate_path(self, key_handle, certificates, mac):
        self.call(12, uint(key_handle) + listof(list(certificates), arr) + arr(mac),
                  "setCertificatePath").end()

    def import_symmetric_key(self, key_handle, encrypted_key, mac):
        self.call(13, uint(key_handle) + arr(encrypted_key) + arr(mac), "importSymmetricKey").end()

    def import_private_key(self, key_handle, encrypted_key, mac):
        self.call(14, uint(key_handle) + arr(encrypted_key) + arr(mac), "importPrivateKey").end()

    def add_extension(self, key_handle, type_, sub_type, qualifier, extension_data, mac):
        self.call(15, uint(key_handle) + string(type_) + byte(sub_type) + string(qualifier or "")
                  + blob(extension_data) + arr(mac), "addExtension").end()

    def post_delete_key(self, provisioning_handle, target_key_handle, authorization, mac):
        self.call(50, uint(provisioning_handle) + uint(target_key_handle) + arr(authorization)
                  + arr(mac), "postDeleteKey").end()

    def post_unlock_key(self, provisioning_handle, target_key_handle, authorization, mac):
        self.call(51, uint(provisioning_handle) + uint(target_key_handle) + arr(authorization)
                  + arr(mac), "postUnlockKey").end()

    def post_update_key(self, key_handle, target_key_handle, authorization, mac):
        self.call(52, uint(key_handle) + uint(target_key_handle) + arr(authorization) + arr(mac),
                  "postUpdateKey").end()

    def post_clone_key_protection(self, key_handle, target_key_handle, authorization, mac):
        self.call(53, uint(key_handle) + uint(target_key_handle) + arr(authorization) + arr(mac),
                  "postCloneKeyProtection").end()

    # -- key management and User API -----------------------------------------------------------

    def enumerate_keys(self, key_handle):
        """(next key handle, provisioning handle) or None at the end."""
        r = self.call(70, uint(key_handle), "enumerateKeys")
        h = r.uint()
        if h == 0:
            r.end()
            return None
        p = r.uint()
        r.end()
        return h, p

    def list_keys(self):
        """{key handle: provisioning handle} of all keys of closed sessions."""
        out = {}
        handle = 0
        while True:
            e = self.enumerate_keys(handle)
            if e is None:
                return out
            if e[0] in out:
                raise ProtocolError(f"enumerateKeys loops at {e[0]}")
            out[e[0]] = e[1]
            handle = e[0]

    def get_key_attributes(self, key_handle):
        r = self.call(71, uint(key_handle), "getKeyAttributes")
        out = KeyAttributes(r.ushort(), r.list(r.array), r.byte(), r.string(), r.list(r.string),
                            r.list(r.string))
        r.end()
        return out

    def get_key_protection_info(self, key_handle):
        r = self.call(72, uint(key_handle), "getKeyProtectionInfo")
        out = KeyProtectionInfo(r.byte(), r.byte(), r.ushort(), r.ushort(), r.bool(), r.bool(),
                                r.byte(), r.ushort(), r.byte(), r.byte(), r.ushort(), r.ushort(),
                                r.byte(), r.ushort(), r.bool(), r.byte(), r.byte(), r.byte(),
                                r.byte())
        r.end()
        return out

    def get_extension(self, key_handle, type_):
        r = self.call(73, uint(key_handle) + string(type_), "getExtension")
        out = Extension(r.byte(), r.string(), r.blob())
        r.end()
        return out

    def set_property(self, key_handle, type_, name, value):
        self.call(74, uint(key_handle) + string(type_) + string(name) + string(value),
                  "setProperty").end()

    def delete_key(self, key_handle, authorization=b""):
        self.call(80, uint(key_handle) + arr(authorization), "deleteKey").end()

    def export_key(self, key_handle, authorization=b""):
        r = self.call(81, uint(key_handle) + arr(authorization), "exportKey")
        k = r.array()
        r.end()
        return k

    def unlock_key(self, key_handle, authorization):
        self.call(82, uint(key_handle) + arr(authorization), "unlockKey").end()

    def change_pin(self, key_handle, authorization, new_pin):
        self.call(83, uint(key_handle) + arr(authorization) + arr(new_pin), "changePin").end()

    def set_pin(self, key_handle, authorization, new_pin):
        self.call(84, uint(key_handle) + arr(authorization) + arr(new_pin), "setPin").end()

    def update_firmware(self, chunk):
        r = self.call(90, blob(chunk), "updateFirmware")
        u = r.string()
        r.end()
        return u

    def sign_hashed_data(self, key_handle, algorithm, data, authorization=b"", parameters=b"",
                         biometric_auth=False):
        r = self.call(100, uint(key_handle) + string(algorithm) + arr(parameters)
                      + boolean(biometric_auth) + arr(authorization) + arr(data),
                      "signHashedData")
        out = r.array()
        r.end()
        return out

    def asymmetric_key_decrypt(self, key_handle, algorithm, data, authorization=b"",
                               parameters=b"", biometric_auth=False):
        r = self.call(101, uint(key_handle) + string(algorithm) + arr(parameters)
                      + boolean(biometric_auth) + arr(authorization) + arr(data),
                      "asymmetricKeyDecrypt")
        out = r.array()
        r.end()
        return out

    def key_agreement(self, key_handle, algorithm, public_key, authorization=b"", parameters=b"",
                      biometric_auth=False):
        r = self.call(102, uint(key_handle) + string(algorithm) + arr(parameters)
                      + boolean(biometric_auth) + arr(authorization) + arr(public_key),
                      "keyAgreement")
        out = r.array()
        r.end()
        return out

    def perform_hmac(self, key_handle, algorithm, data, authorization=b"", parameters=b"",
                     biometric_auth=False):
        r = self.call(103, uint(key_handle) + string(algorithm) + arr(parameters)
                      + boolean(biometric_auth) + arr(authorization) + blob(data),
                      "performHmac")
        out = r.array()
        r.end()
        return out

    def symmetric_key_encrypt(self, key_handle, algorithm, mode, data, authorization=b"",
                              parameters=b"", biometric_auth=False):
        r = self.call(104, uint(key_handle) + string(algorithm) + boolean(mode) + arr(parameters)
                      + boolean(biometric_auth) + arr(authorization) + blob(data),
                      "symmetricKeyEncrypt")
        out = r.blob()
        r.end()
        return out


# ---------------------------------------------------------------------------------------------
# The issuer
# ---------------------------------------------------------------------------------------------

@dataclass
class PukPolicy:
    handle: int
    id: str
    value: bytes
    format: int
    retry_limit: int


@dataclass
class PinPolicy:
    handle: int
    id: str
    puk: Optional[PukPolicy]
    user_defined: bool
    user_modifiable: bool
    format: int
    retry_limit: int
    grouping: int
    pattern_restrictions: int
    min_length: int
    max_length: int
    input_method: int


@dataclass
class KeyEntry:
    """The issuer's record of a key it created."""
    handle: int
    id: str
    public_key: bytes             # SPKI returned by createKeyEntry
    attestation: bytes
    mac: bytes
    key_algorithm: str
    key_parameters: bytes
    app_usage: int
    friendly_name: str
    endorsed_algorithms: List[str]
    pin_policy: Optional[PinPolicy]
    pin: Optional[bytes]
    export_protection: int
    delete_protection: int
    biometric_protection: int
    enable_pin_caching: bool
    provisioning_handle: int
    certificate_path: Optional[List[bytes]] = None
    certified_key: Optional[bytes] = None   # SPKI in the end-entity certificate
    symmetric_key: Optional[bytes] = None
    imported_private_key: object = None
    extensions: dict = field(default_factory=dict)

    @property
    def ee_certificate(self):
        if not self.certificate_path:
            raise ValueError(f"key {self.id} has no certificate path")
        return self.certificate_path[0]

    @property
    def puk(self):
        return self.pin_policy.puk.value if self.pin_policy and self.pin_policy.puk else None


class Issuer:
    """Drives one provisioning session against a Device.

    Test hooks: ``counter`` is the issuer's macSequenceCounter and may be changed;
    ``corrupt_next_mac`` flips one bit of the next MAC sent."""

    def __init__(self, device, *, ca=None, curve="P-256", privacy_enabled=False, kmk=None,
                 issuer_uri="https://issuer.example.com/sks/provisioning", server_session_id=None,
                 session_key_limit=1000, session_life_time=3600, client_time=None,
                 server_certificate=None, session_key_algorithm=ALG_SESSION_1):
        self.device = device
        self.ca = ca or CertificateAuthority()
        self.curve = curve
        self.privacy_enabled = privacy_enabled
        self.kmk = kmk
        self.issuer_uri = issuer_uri
        self.server_session_id = server_session_id or ("S" + secrets.token_hex(15))
        self.session_key_limit = session_key_limit
        self.session_life_time = session_life_time
        self.client_time = int(datetime.datetime.now().timestamp()) if client_time is None \
            else client_time
        self.server_certificate = server_certificate if server_certificate is not None \
            else self.ca.der
        self.session_key_algorithm = session_key_algorithm
        self.handle = None
        self.session_key = None
        self.counter = 0
        self.corrupt_next_mac = False
        self.keys = {}
        self.pin_policies = {}
        self.puk_policies = {}
        self._ids = 0
        self.closed = False

    # -- session -------------------------------------------------------------------------------

    @property
    def kmk_spki(self):
        return spki(self.kmk.public_key()) if self.kmk is not None else b""

    def open(self):
        self.ephemeral = ec.generate_private_key(CURVES[self.curve])
        self.server_ephemeral_key = spki(self.ephemeral.public_key())
        info = self.device.device_info()
        self.device_certificate = info.certificates[0]
        self.device_id = ANONYMOUS_DEVICE_ID if self.privacy_enabled else self.device_certificate
        reply = self.device.create_provisioning_session(
            self.session_key_algorithm, self.privacy_enabled, self.server_session_id,
            self.server_ephemeral_key, self.issuer_uri, self.kmk_spki, self.client_time,
            self.session_life_time, self.session_key_limit, self.server_certificate)
        self.handle = reply.provisioning_handle
        self.client_session_id = reply.client_session_id
        self.client_ephemeral_key = reply.client_ephemeral_key
        self.session_attestation = reply.attestation
        if self.handle == 0:
            raise IssuerCheckError("createProvisioningSession returned provisioningHandle 0")
        client_key = serialization.load_der_public_key(reply.client_ephemeral_key)
        if (not isinstance(client_key, ec.EllipticCurvePublicKey)
                or client_key.curve.name != CURVES[self.curve].name):
            raise IssuerCheckError(f"clientEphemeralKey is not on {self.curve}")
        if spki(client_key) != reply.client_ephemeral_key:
            raise IssuerCheckError("clientEphemeralKey is not in the strict SPKI encoding")
        z = self.ephemeral.exchange(ec.ECDH(), client_key)
        self.session_key = session_key(z, self.client_session_id, self.server_session_id,
                                       self.issuer_uri, self.device_id)
        data = session_attestation_data(
            self.client_session_id, self.server_session_id, self.issuer_uri, self.device_id,
            self.session_key_algorithm, self.privacy_enabled, self.server_ephemeral_key,
            reply.client_ephemeral_key, self.kmk_spki, self.client_time, self.session_life_time,
            self.session_key_limit, self.server_certificate)
        if self.privacy_enabled:
            if not hmac.compare_digest(hmac_sha256(self.session_key, data), reply.attestation):
                raise IssuerCheckError("privacy-enabled session attestation (HMAC) mismatch")
        else:
            verify_device_attestation(self.device_certificate, data, reply.attestation)
        return self

    def mac(self, method_name, data):
        m = method_mac(self.session_key, method_name, self.counter, data)
        self.counter += 1
        if self.corrupt_next_mac:
            self.corrupt_next_mac = False
            m = bytes([m[0] ^ 0x01]) + m[1:]
        return m

    def expected_attestation(self, data):
        a = device_attestation(self.session_key, self.counter, data)
        self.counter += 1
        return a

    def encrypt(self, plaintext, iv=None):
        return encrypted_data(self.session_key, plaintext, iv)

    def new_id(self, prefix):
        self._ids += 1
        return f"{prefix}.{self._ids}"

    def close(self, nonce=None):
        nonce = secrets.token_bytes(32) if nonce is None else nonce
        m = self.mac(M_CLOSE_PROVISIONING_SESSION,
                     close_mac_data(self.client_session_id, self.server_session_id,
                                    self.issuer_uri, nonce))
        attestation = self.device.close_provisioning_session(self.handle, nonce, m)
        expected = self.expected_attestation(close_attestation_data(nonce))
        if not hmac.compare_digest(expected, attestation):
            raise IssuerCheckError(f"close attestation mismatch: got {attestation.hex()} "
                                   f"expected {expected.hex()}")
        self.closed = True
        return attestation

    def abort(self):
        self.device.abort_provisioning_session(self.handle)

    # -- protection objects --------------------------------------------------------------------

    def create_puk_policy(self, puk, *, id=None, format=FORMAT_NUMERIC, retry_limit=3):
        id_ = self.new_id("PUK") if id is None else id
        puk = puk.encode() if isinstance(puk, str) else bytes(puk)
        encrypted = self.encrypt(puk)
        m = self.mac(M_CREATE_PUK_POLICY, create_puk_policy_mac_data(id_, encrypted, format,
                                                                      retry_limit))
        h = self.device.create_puk_policy(self.handle, id_, encrypted, format, retry_limit, m)
        p = PukPolicy(h, id_, puk, format, retry_limit)
        self.puk_policies[h] = p
        return p

    def create_pin_policy(self, *, id=None, puk=None, user_defined=True, user_modifiable=True,
                          format=FORMAT_NUMERIC, retry_limit=3, grouping=GROUPING_NONE,
                          pattern_restrictions=0, min_length=4, max_length=8,
                          input_method=INPUT_ANY):
        id_ = self.new_id("PIN") if id is None else id
        m = self.mac(M_CREATE_PIN_POLICY, create_pin_policy_mac_data(
            id_, puk.id if puk else "", user_defined, user_modifiable, format, retry_limit,
            grouping, pattern_restrictions, min_length, max_length, input_method))
        h = self.device.create_pin_policy(self.handle, id_, puk.handle if puk else 0,
                                          user_defined, user_modifiable, format, retry_limit,
                                          grouping, pattern_restrictions, min_length, max_length,
                                          input_method, m)
        p = PinPolicy(h, id_, puk, user_defined, user_modifiable, format, retry_limit, grouping,
                      pattern_restrictions, min_length, max_length, input_method)
        self.pin_policies[h] = p
        return p

    # -- keys ----------------------------------------------------------------------------------

    def create_key_entry(self, key_algorithm=KEY_EC_P256, *, id=None, pin_policy=None, pin=None,
                         server_seed=b"", device_pin_protection=False, enable_pin_caching=False,
                         biometric_protection=BIOMETRIC_NONE, export_protection=PROTECTION_NONE,
                         delete_protection=PROTECTION_NONE, app_usage=APP_UNIVERSAL,
                         friendly_name="", key_parameters=b"", endorsed_algorithms=(),
                         key_entry_algorithm=ALG_KEY_1, check_key=True):
        """createKeyEntry; verifies the key.1 attestation and (check_key) that the public key
        matches the request. The PIN is sent in clear for user-defined policies and encrypted
        for issuer-set ones."""
        id_ = self.new_id("Key") if id is None else id
        if isinstance(pin, str):
            pin = pin.encode("utf-8")
        endorsed = list(endorsed_algorithms)
        pin_wire = b""
        pin_reference = None
        if pin_policy is not None:
            if pin is None:
                raise ValueError("a PIN policy needs a PIN")
            if pin_policy.user_defined:
                pin_wire = pin
            else:
                pin_wire = self.encrypt(pin)
                pin_reference = pin_wire
        elif pin is not None:
            pin_wire = pin
        m = self.mac(M_CREATE_KEY_ENTRY, create_key_entry_mac_data(
            id_, key_entry_algorithm, server_seed, pin_policy.id if pin_policy else "",
            pin_reference, device_pin_protection, enable_pin_caching, biometric_protection,
            export_protection, delete_protection, app_usage, friendly_name, key_algorithm,
            key_parameters, endorsed))
        kd = self.device.create_key_entry(
            self.handle, id_, key_entry_algorithm, server_seed, device_pin_protection,
            pin_policy.handle if pin_policy else 0, pin_wire, enable_pin_caching,
            biometric_protection, export_protection, delete_protection, app_usage,
            friendly_name, key_algorithm, key_parameters, endorsed, m)
        expected = self.expected_attestation(key_attestation_data(kd.public_key, m))
        if not hmac.compare_digest(expected, kd.attestation):
            raise IssuerCheckError(f"key.1 attestation mismatch for {id_}: got "
                                   f"{kd.attestation.hex()} expected {expected.hex()}")
        if kd.key_handle == 0:
            raise IssuerCheckError("createKeyEntry returned keyHandle 0")
        if check_key:
            check_public_key(kd.public_key, key_algorithm, key_parameters)
        key = KeyEntry(kd.key_handle, id_, kd.public_key, kd.attestation, m, key_algorithm,
                       key_parameters, app_usage, friendly_name, endorsed, pin_policy, pin,
                       export_protection, delete_protection, biometric_protection,
                       enable_pin_caching, self.handle)
        self.keys[id_] = key
        return key

    def set_certificate_path(self, key, certificates=None, *, certify=None):
        """setCertificatePath. Without certificates the CA certifies `certify` (default: the
        generated public key) and the path is [end-entity, CA]."""
        if certificates is None:
            certify = key.public_key if certify is None else certify
            certificates = [self.ca.issue(certify, f"{key.id} {secrets.token_hex(4)}"),
                            self.ca.der]
            key.certified_key = bytes(certify)
        else:
            key.certified_key = None
        m = self.mac(M_SET_CERTIFICATE_PATH,
                     set_certificate_path_mac_data(key.public_key, key.id, certificates))
        self.device.set_certificate_path(key.handle, certificates, m)
        key.certificate_path = list(certificates)
        return key

    def provision_key(self, key_algorithm=KEY_EC_P256, **kw):
        """createKeyEntry followed by setCertificatePath."""
        key = self.create_key_entry(key_algorithm, **kw)
        return self.set_certificate_path(key)

    def get_key_handle(self, id_):
        return self.device.get_key_handle(self.handle, id_)

    def import_symmetric_key(self, key, secret):
        encrypted = self.encrypt(secret)
        m = self.mac(M_IMPORT_SYMMETRIC_KEY, import_key_mac_data(key.ee_certificate, encrypted))
        self.device.import_symmetric_key(key.handle, encrypted, m)
        key.symmetric_key = bytes(secret)

    def import_private_key(self, key, private_key):
        encrypted = self.encrypt(pkcs8(private_key))
        m = self.mac(M_IMPORT_PRIVATE_KEY, import_key_mac_data(key.ee_certificate, encrypted))
        self.device.import_private_key(key.handle, encrypted, m)
        key.imported_private_key = private_key

    def add_extension(self, key, type_, sub_type, data, qualifier=""):
        """addExtension; `data` is the plaintext, encrypted here for sub-type 1."""
        wire = self.encrypt(data) if sub_type == SUB_TYPE_ENCRYPTED_EXTENSION else bytes(data)
        m = self.mac(M_ADD_EXTENSION, add_extension_mac_data(key.ee_certificate, type_, sub_type,
                                                             qualifier, wire))
        self.device.add_extension(key.handle, type_, sub_type, qualifier, wire, m)
        key.extensions[type_] = (sub_type, qualifier, bytes(data))

    def add_property_bag(self, key, type_, properties):
        self.add_extension(key, type_, SUB_TYPE_PROPERTY_BAG, property_bag(properties))

    # -- post-provisioning ---------------------------------------------------------------------

    def target_authorization(self, target_ee_certificate, kmk=None):
        kmk = self.kmk if kmk is None else kmk
        return sign_with_key_management_key(
            kmk, target_key_reference(self.session_key, self.device_id, target_ee_certificate))

    def _authorization(self, target, kmk, authorization):
        if authorization is not None:
            return authorization
        return self.target_authorization(target.ee_certificate, kmk)

    def post_delete_key(self, target, *, kmk=None, authorization=None):
        a = self._authorization(target, kmk, authorization)
        m = self.mac(M_POST_DELETE_KEY, post_target_mac_data(a))
        self.device.post_delete_key(self.handle, target.handle, a, m)

    def post_unlock_key(self, target, *, kmk=None, authorization=None):
        a = self._authorization(target, kmk, authorization)
        m = self.mac(M_POST_UNLOCK_KEY, post_target_mac_data(a))
        self.device.post_unlock_key(self.handle, target.handle, a, m)

    def post_update_key(self, new_key, target, *, kmk=None, authorization=None):
        a = self._authorization(target, kmk, authorization)
        m = self.mac(M_POST_UPDATE_KEY, post_new_key_mac_data(new_key.ee_certificate, a))
        self.device.post_update_key(new_key.handle, target.handle, a, m)

    def post_clone_key_protection(self, new_key, target, *, kmk=None, authorization=None):
        a = self._authorization(target, kmk, authorization)
        m = self.mac(M_POST_CLONE_KEY_PROTECTION, post_new_key_mac_data(new_key.ee_certificate, a))
        self.device.post_clone_key_protection(new_key.handle, target.handle, a, m)


def roll_over_authorization(old_kmk_private, new_kmk_spki):
    """updateKeyManagementKey authorization: Sign(old, "RollOverAuthorization" || new)."""
    return sign_with_key_management_key(old_kmk_private,
                                        roll_over_authorization_data(new_kmk_spki))
