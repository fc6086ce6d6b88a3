"""An independent SKIP issuer (secure key packages, docs/skip.md), written from the protocol
description alone: `cryptography` for keys and certificates, `asn1crypto` for the CMS
SignedData and KeyPairContainers, and pure Python for brainpoolP320r1, which Debian's
cryptography 38 lacks.

    req = parse_request(pkcs10_der)                       # the device's factory key
    pkg = Package.issue(req, ca, ["secp256r1", "ed25519"], aes_bits=256)
    der = pkg.der()                                       # the CMS to give `sks skip import`

Every part of a Package is a plain attribute, so a test can break exactly one thing (a
ciphertext byte, the signer's key identifier, a certificate left out) before calling der().
`check_package` is the reverse: it verifies and decrypts a package made by someone else
(`sks skip issue`) with the factory private key.
"""

import datetime
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from typing import List, Optional

from asn1crypto import algos, cms, core
from asn1crypto import csr as acsr
from asn1crypto import keys as akeys
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sympadding
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from sksissuer import BRAINPOOL_P320R1, der_children, der_read, der_tlv, spki_parts

# ---------------------------------------------------------------------------------------------
# Curves and key types
# ---------------------------------------------------------------------------------------------

# Factory and ephemeral curves (OpenSSL / RFC names); device keys are these and Ed25519.
CURVES = ["brainpoolP256r1", "brainpoolP320r1", "brainpoolP384r1", "brainpoolP512r1",
          "secp256r1", "secp384r1", "secp521r1"]
DEVICE_KEY_TYPES = CURVES + ["ed25519"]
# What `sks` calls them on the command line.
CLI_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521",
             "brainpoolP256r1": "brainpoolP256r1", "brainpoolP320r1": "brainpoolP320r1",
             "brainpoolP384r1": "brainpoolP384r1", "brainpoolP512r1": "brainpoolP512r1",
             "ed25519": "Ed25519"}

_CRYPTOGRAPHY_CURVES = {
    "secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1, "secp521r1": ec.SECP521R1,
    "brainpoolP256r1": ec.BrainpoolP256R1, "brainpoolP384r1": ec.BrainpoolP384R1,
    "brainpoolP512r1": ec.BrainpoolP512R1, "secp256k1": ec.SECP256K1,
}
CURVE_OIDS = {
    "secp256r1": "1.2.840.10045.3.1.7", "secp384r1": "1.3.132.0.34", "secp521r1": "1.3.132.0.35",
    "brainpoolP256r1": "1.3.36.3.3.2.8.1.1.7", "brainpoolP320r1": "1.3.36.3.3.2.8.1.1.9",
    "brainpoolP384r1": "1.3.36.3.3.2.8.1.1.11", "brainpoolP512r1": "1.3.36.3.3.2.8.1.1.13",
    "secp256k1": "1.3.132.0.10",
}
_OID_TO_CURVE = {v: k for k, v in CURVE_OIDS.items()}
OID_EC = "1.2.840.10045.2.1"
OID_AES128_CBC = "2.16.840.1.101.3.4.1.2"
OID_AES192_CBC = "2.16.840.1.101.3.4.1.22"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
# id-kp-sksSkipPackageSigner (docs/skip.md): a private OID under the UUID arc 2.25.
OID_SKIP_SIGNER_EKU = "2.25.22415696597952645496466575977082088528"
# Digest for an ECDSA signature by curve size, as the sks tool chooses it.
_HASH_BY_BITS = [(256, hashes.SHA256), (384, hashes.SHA384), (10 ** 6, hashes.SHA512)]


def hash_for_bits(bits):
    for limit, h in _HASH_BY_BITS:
        if bits <= limit:
            return h
    return hashes.SHA512


# ---------------------------------------------------------------------------------------------
# DER building blocks (asn1crypto)
# ---------------------------------------------------------------------------------------------

class _AlgorithmIdentifier(core.Sequence):
    _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]


class _PrivateKeyInfo(core.Sequence):
    _fields = [("version", core.Integer), ("algorithm", _AlgorithmIdentifier),
               ("private_key", core.OctetString)]


class _ECPrivateKey(core.Sequence):
    """RFC 5915, built field by field so that every optional part can be left out."""
    _fields = [("version", core.Integer), ("private_key", core.OctetString),
               ("parameters", core.ObjectIdentifier, {"explicit": 0, "optional": True}),
               ("public_key", core.OctetBitString, {"explicit": 1, "optional": True})]


class _EncryptedPrivateKeyInfo(core.Sequence):
    _fields = [("encryption_algorithm", _AlgorithmIdentifier), ("encrypted_data", core.OctetString)]


class KeyPairContainer(core.Sequence):
    _fields = [("public", core.Any), ("encryptedPrivate", core.Any)]


class KeyPairContainers(core.SequenceOf):
    _child_spec = KeyPairContainer


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------

class EcKey:
    """An EC key pair on any SKIP curve; brainpoolP320r1 in pure Python."""

    def __init__(self, curve, private=None):
        self.curve = curve
        self.pure = curve == "brainpoolP320r1"
        if self.pure:
            c = BRAINPOOL_P320R1
            self.d = private if private is not None else secrets.randbelow(c.n - 1) + 1
            self.point = c.mul(self.d, c.g)
            self.size = c.size
        else:
            cls = _CRYPTOGRAPHY_CURVES[curve]
            self.key = (ec.derive_private_key(private, cls()) if private is not None
                        else ec.generate_private_key(cls()))
            self.d = self.key.private_numbers().private_value
            nums = self.key.public_key().public_numbers()
            self.point = (nums.x, nums.y)
            self.size = (self.key.curve.key_size + 7) // 8

    @property
    def bits(self):
        return 320 if self.pure else self.key.curve.key_size

    def point_bytes(self):
        x, y = self.point
        return b"\x04" + x.to_bytes(self.size, "big") + y.to_bytes(self.size, "big")

    def spki(self):
        alg = der_tlv(0x30, core.ObjectIdentifier(OID_EC).dump() + core.ObjectIdentifier(CURVE_OIDS[self.curve]).dump())
        return der_tlv(0x30, alg + der_tlv(0x03, b"\x00" + self.point_bytes()))

    def ecdh(self, peer_spki):
        """Z: the x coordinate of d * peer, at full field length."""
        if self.pure:
            pt = BRAINPOOL_P320R1.point_from_spki(peer_spki)
            return BRAINPOOL_P320R1.mul(self.d, pt)[0].to_bytes(self.size, "big")
        peer = serialization.load_der_public_key(peer_spki)
        return self.key.exchange(ec.ECDH(), peer)

    def sign(self, data, hash_cls):
        """ECDSA over data, DER encoded."""
        if not self.pure:
            return self.key.sign(data, ec.ECDSA(hash_cls()))
        c = BRAINPOOL_P320R1
        h = hashlib.new(hash_cls.name, data).digest()
        e = int.from_bytes(h, "big") >> max(0, 8 * len(h) - c.n.bit_length())
        while True:
            k = secrets.randbelow(c.n - 1) + 1
            r = c.mul(k, c.g)[0] % c.n
            s = pow(k, -1, c.n) * (e + r * self.d) % c.n
            if r and s:
                return utils.encode_dss_signature(r, s)

    def pkcs8(self, with_parameters=False, with_public_key=True):
        """PrivateKeyInfo with an RFC 5915 ECPrivateKey; its parameters and public key are
        optional and may be left out."""
        inner = {"version": 1, "private_key": self.d.to_bytes(self.size, "big")}
        if with_parameters:
            inner["parameters"] = CURVE_OIDS[self.curve]
        if with_public_key:
            inner["public_key"] = self.point_bytes()
        return _PrivateKeyInfo({
            "version": 0,
            "algorithm": {"algorithm": OID_EC,
                          "parameters": core.ObjectIdentifier(CURVE_OIDS[self.curve])},
            "private_key": _ECPrivateKey(inner).dump(),
        }).dump()


class EdKey:
    def __init__(self):
        self.curve = "ed25519"
        self.key = ed25519.Ed25519PrivateKey.generate()

    def spki(self):
        return self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    def pkcs8(self, **_):
        return self.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def new_key(kind):
    return EdKey() if kind == "ed25519" else EcKey(kind)


def ecdsa_verify(spki_der, data, signature_der, hash_cls):
    """True if the DER ECDSA signature verifies (any SKIP curve)."""
    r, s = utils.decode_dss_signature(signature_der)
    oid, params, _ = spki_parts(spki_der)
    if params == core.ObjectIdentifier(CURVE_OIDS["brainpoolP320r1"]).dump():
        pt = BRAINPOOL_P320R1.point_from_spki(spki_der)
        return BRAINPOOL_P320R1.ecdsa_verify(pt, hashlib.new(hash_cls.name, data).digest(), r, s)
    key = serialization.load_der_public_key(spki_der)
    try:
        key.verify(signature_der, data, ec.ECDSA(hash_cls()))
        return True
    except InvalidSignature:
        return False


def curve_of_spki(spki_der):
    oid, params, _ = spki_parts(spki_der)
    if oid == core.ObjectIdentifier("1.3.101.112").dump():
        return "ed25519"
    return _OID_TO_CURVE.get(core.ObjectIdentifier.load(params).dotted)


def aes_key_from_z(z, aes_bits):
    """The rightmost aes_bits/8 bytes of Z (CKM_ECDH1_DERIVE with CKD_NULL)."""
    return z[-(aes_bits // 8):]


def aes_cbc_pad(key, iv, data, encrypt=True):
    c = Cipher(algorithms.AES(key), modes.CBC(iv))
    if encrypt:
        p = sympadding.PKCS7(128).padder()
        e = c.encryptor()
        return e.update(p.update(data) + p.finalize()) + e.finalize()
    d = c.decryptor()
    u = sympadding.PKCS7(128).unpadder()
    return u.update(d.update(data) + d.finalize()) + u.finalize()


# ---------------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------------

def _utcnow():
    return datetime.datetime.utcnow().replace(microsecond=0)


def ski_of(spki_der):
    """RFC 5280 method 1: SHA-1 of the subjectPublicKey bits."""
    return hashlib.sha1(spki_parts(spki_der)[2]).digest()


class Ca:
    """A P-256 certification authority: a root, or an intermediate under another Ca."""

    def __init__(self, name="SKIP test root CA", parent=None, not_before=None, not_after=None):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.parent = parent
        spki = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        self.ski = ski_of(spki)
        now = _utcnow()
        builder = (x509.CertificateBuilder()
                   .subject_name(self.name)
                   .issuer_name(parent.name if parent else self.name)
                   .public_key(self.key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(not_before or now - datetime.timedelta(hours=1))
                   .not_valid_after(not_after or now + datetime.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                  critical=True)
                   .add_extension(x509.SubjectKeyIdentifier(self.ski), critical=False))
        signer = parent.key if parent else self.key
        if parent:
            builder = builder.add_extension(x509.AuthorityKeyIdentifier(parent.ski, None, None), critical=False)
        self.cert = builder.sign(signer, hashes.SHA256())
        self.der = self.cert.public_bytes(serialization.Encoding.DER)
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def chain(self):
        """This CA's certificate and its parents', nearest first."""
        return [self.der] + (self.parent.chain() if self.parent else [])

    def issue(self, spki_der, subject, *, not_before=None, not_after=None, ski=True, signer=False,
              eku=None, key_usage=None, ca=False):
        """An end-entity certificate for any SPKI. Keys cryptography cannot load
        (brainpoolP320r1) are spliced into a certificate made for a stand-in key, and the
        TBS is signed again. signer: a package signer's certificate (keyUsage
        digitalSignature, extendedKeyUsage the SKIP package-signer OID). eku (list of OID
        strings) and key_usage ("digitalSignature" / "keyAgreement") override that for tests;
        ca makes basicConstraints cA true."""
        now = _utcnow()
        if isinstance(subject, str):
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (x509.CertificateBuilder()
                   .subject_name(subject).issuer_name(self.name)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(not_before or min(now, not_after or now) - datetime.timedelta(days=7))
                   .not_valid_after(not_after or now + datetime.timedelta(days=365))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier(self.ski, None, None), critical=False))
        if signer:
            eku = [OID_SKIP_SIGNER_EKU] if eku is None else eku
            key_usage = "digitalSignature" if key_usage is None else key_usage
        if eku:
            # cryptography 38 cannot hold OID arcs beyond 64 bits (2.25 UUID arcs are 128), so
            # the extension's DER comes from asn1crypto.
            value = ax509.ExtKeyUsageSyntax(eku).dump()
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.oid.ExtensionOID.EXTENDED_KEY_USAGE, value), critical=True)
        if key_usage:
            builder = builder.add_extension(
                x509.KeyUsage(key_usage == "digitalSignature", False, False, False, key_usage == "keyAgreement",
                              False, False, False, False), critical=True)
        if ski:
            builder = builder.add_extension(x509.SubjectKeyIdentifier(ski_of(spki_der)), critical=False)
        try:
            key = serialization.load_der_public_key(spki_der)
        except (ValueError, Exception):  # noqa: BLE001 - cryptography raises several kinds
            key = None
        if key is not None:
            return builder.public_key(key).sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        stand_in = ec.generate_private_key(ec.SECP256R1()).public_key()
        stand_in_spki = stand_in.public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        cert = builder.public_key(stand_in).sign(self.key, hashes.SHA256())
        _, s, e = der_read(cert.tbs_certificate_bytes)
        content = cert.tbs_certificate_bytes[s:e]
        assert content.count(stand_in_spki) == 1
        tbs = der_tlv(0x30, content.replace(stand_in_spki, spki_der))
        der = cert.public_bytes(serialization.Encoding.DER)
        _, s, e = der_read(der)
        sig_alg = der_children(der[s:e])[1][1]
        out = der_tlv(0x30, tbs + sig_alg + der_tlv(0x03, b"\x00" + self.key.sign(tbs, ec.ECDSA(hashes.SHA256()))))
        x509.load_der_x509_certificate(out)
        return out


# ---------------------------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------------------------

@dataclass
class Request:
    der: bytes
    spki: bytes
    curve: str
    subject: x509.Name


def parse_request(data):
    """A PKCS#10 (DER or PEM) whose signature verifies with its own key on a SKIP curve."""
    if data.lstrip().startswith(b"-----BEGIN"):
        data = x509.load_pem_x509_csr(data).public_bytes(serialization.Encoding.DER)
    req = acsr.CertificationRequest.load(data)
    info = req["certification_request_info"]
    spki = info["subject_pk_info"].dump()
    curve = curve_of_spki(spki)
    if curve not in CURVES:
        raise ValueError(f"request key is not on a SKIP curve: {curve}")
    sig_hash = {"sha256_ecdsa": hashes.SHA256, "sha384_ecdsa": hashes.SHA384,
                "sha512_ecdsa": hashes.SHA512}[req["signature_algorithm"]["algorithm"].native]
    if not ecdsa_verify(spki, info.dump(), req["signature"].native, sig_hash):
        raise ValueError("the request's signature does not verify with its own key")
    return Request(data, spki, curve, x509.load_der_x509_csr(data).subject)


def make_request(key, common_name):
    """A PKCS#10 request (DER) for an EcKey, signed by it (for checking `sks skip issue`
    with a factory key Python holds)."""
    info = acsr.CertificationRequestInfo({
        "version": "v1",
        "subject": ax509.Name.build({"common_name": common_name}),
        "subject_pk_info": akeys.PublicKeyInfo.load(key.spki()),
        "attributes": [],
    })
    h = hash_for_bits(key.bits)
    return acsr.CertificationRequest({
        "certification_request_info": info,
        "signature_algorithm": {"algorithm": f"{h.name}_ecdsa"},
        "signature": key.sign(info.dump(), h),
    }).dump()


# ---------------------------------------------------------------------------------------------
# The package
# ---------------------------------------------------------------------------------------------

@dataclass
class DeviceKey:
    kind: str
    key: object
    spki: bytes
    pkcs8: bytes
    cert: bytes
    iv: bytes = b""
    ciphertext: bytes = b""
    cipher_oid: str = OID_AES256_CBC
    container_spki: bytes = b""     # what the container claims as the public key
    include_cert: bool = True

    def epki(self):
        return _EncryptedPrivateKeyInfo({
            "encryption_algorithm": {"algorithm": self.cipher_oid, "parameters": core.OctetString(self.iv)},
            "encrypted_data": self.ciphertext,
        }).dump()


@dataclass
class Package:
    request: Request
    ca: Ca
    ephemeral: EcKey
    ephemeral_cert: bytes
    factory_cert: bytes
    aes_key: bytes
    keys: List[DeviceKey]
    signer_ski: bytes
    extra_certs: List[bytes] = field(default_factory=list)   # CA chain
    content_type: str = "data"
    corrupt_signature: bool = False
    signed_attributes: bool = True
    content_override: Optional[bytes] = None

    @classmethod
    def issue(cls, request, ca, key_types, aes_bits=256, *, ephemeral_curve=None, cert_not_after=None,
              pkcs8_options=None):
        """A package with new keys of key_types for the request's factory key, certified by ca
        (whose whole chain goes in)."""
        eph = EcKey(ephemeral_curve or request.curve)
        if eph.curve == request.curve:
            aes_key = aes_key_from_z(eph.ecdh(request.spki), aes_bits)
        else:  # no agreement across curves: such a package can only be refused
            aes_key = os.urandom(aes_bits // 8)
        cipher = OID_AES256_CBC if aes_bits == 256 else OID_AES128_CBC
        subject_cn = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        prefix = subject_cn[0].value if subject_cn else "SKIP"
        keys = []
        for i, kind in enumerate(key_types, 1):
            k = new_key(kind)
            spki = k.spki()
            pkcs8 = k.pkcs8(**(pkcs8_options or {}))
            iv = os.urandom(16)
            keys.append(DeviceKey(kind, k, spki, pkcs8,
                                  ca.issue(spki, f"{prefix} py{i} {kind}", not_after=cert_not_after),
                                  iv, aes_cbc_pad(aes_key, iv, pkcs8), cipher, spki))
        eph_spki = eph.spki()
        return cls(request, ca, eph, ca.issue(eph_spki, f"{prefix} ephemeral", signer=True),
                   ca.issue(request.spki, request.subject), aes_key, keys, ski_of(eph_spki),
                   extra_certs=ca.chain())

    def content(self):
        if self.content_override is not None:
            return self.content_override
        return KeyPairContainers([
            KeyPairContainer({"public": core.Any.load(k.container_spki), "encryptedPrivate": core.Any.load(k.epki())})
            for k in self.keys]).dump()

    def certificates(self):
        certs = [self.factory_cert, self.ephemeral_cert]
        certs += [k.cert for k in self.keys if k.include_cert]
        return certs + list(self.extra_certs)

    def der(self):
        content = self.content()
        hash_cls = hash_for_bits(self.ephemeral.bits)
        digest_name = hash_cls.name                                   # sha256 / sha384 / sha512
        attrs = [
            cms.CMSAttribute({"type": "content_type", "values": [self.content_type]}),
            cms.CMSAttribute({"type": "message_digest", "values": [hashlib.new(digest_name, content).digest()]}),
        ]
        signed = cms.CMSAttributes(attrs).dump() if self.signed_attributes else content
        signature = self.ephemeral.sign(signed, hash_cls)
        if self.corrupt_signature:
            signature = signature[:-1] + bytes([signature[-1] ^ 1])
        signer = {
            "version": "v3",
            "sid": cms.SignerIdentifier({"subject_key_identifier": self.signer_ski}),
            "digest_algorithm": {"algorithm": digest_name},
            "signature_algorithm": {"algorithm": f"{digest_name}_ecdsa"},
            "signature": signature,
        }
        if self.signed_attributes:
            signer["signed_attrs"] = cms.CMSAttributes(attrs)
        signed_data = cms.SignedData({
            "version": "v3",
            "digest_algorithms": [{"algorithm": digest_name}],
            "encap_content_info": {"content_type": self.content_type, "content": content},
            "certificates": [cms.CertificateChoices({"certificate": ax509.Certificate.load(c)})
                             for c in self.certificates()],
            "signer_infos": [cms.SignerInfo(signer)],
        })
        return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()

    def pem(self):
        import base64
        b64 = base64.encodebytes(self.der()).decode().replace("\n", "")
        lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
        return ("-----BEGIN CMS-----\n" + "\n".join(lines) + "\n-----END CMS-----\n").encode()


# ---------------------------------------------------------------------------------------------
# Checking a package made elsewhere (`sks skip issue`)
# ---------------------------------------------------------------------------------------------

@dataclass
class CheckedKey:
    kind: str
    spki: bytes
    cert: bytes
    pkcs8: bytes


def _cert_spki(der):
    return ax509.Certificate.load(der)["tbs_certificate"]["subject_public_key_info"].dump()


def _verify_cert_signature(cert_der, issuer_spki):
    cert = ax509.Certificate.load(cert_der)
    alg = cert["signature_algorithm"]["algorithm"].native
    h = {"sha256_ecdsa": hashes.SHA256, "sha384_ecdsa": hashes.SHA384, "sha512_ecdsa": hashes.SHA512}[alg]
    return ecdsa_verify(issuer_spki, cert["tbs_certificate"].dump(), cert["signature_value"].native, h)


def _chains_to(cert_der, pool, root_der, depth=0):
    """Signed by its issuer, and so on up to the root (issuers found by name in pool)."""
    if cert_der == root_der:
        return True
    if depth > 8:
        return False
    issuer = ax509.Certificate.load(cert_der).issuer.dump()
    for cand in pool + [root_der]:
        if cand != cert_der and ax509.Certificate.load(cand).subject.dump() == issuer \
                and _verify_cert_signature(cert_der, _cert_spki(cand)):
            return _chains_to(cand, pool, root_der, depth + 1)
    return False


def check_package(der, factory_key, root_der):
    """Verifies a package independently and decrypts its keys with the factory private key
    (an EcKey): certificates signed by the root, signer found by key identifier, signature
    and content digest, ephemeral key on the factory curve, every private key matching its
    container's public key and its certificate. Returns the CheckedKeys."""
    ci = cms.ContentInfo.load(der)
    assert ci["content_type"].native == "signed_data", "not SignedData"
    sd = ci["content"]
    certs = [c.chosen.dump() for c in sd["certificates"]]
    for c in certs:
        assert _chains_to(c, certs, root_der), "a certificate does not chain to the root"
    (si,) = list(sd["signer_infos"])
    sid = si["sid"]
    assert sid.name == "subject_key_identifier", f"signer identified by {sid.name}"
    signer = [c for c in certs if ski_of(_cert_spki(c)) == sid.chosen.native]
    assert len(signer) == 1, "signer not found by subjectKeyIdentifier"
    eph_spki = _cert_spki(signer[0])
    tbs = ax509.Certificate.load(signer[0])
    assert OID_SKIP_SIGNER_EKU in (tbs.extended_key_usage_value.native or []), "signer lacks the SKIP signer EKU"
    assert "digital_signature" in (tbs.key_usage_value.native or set()), "signer lacks keyUsage digitalSignature"
    assert curve_of_spki(eph_spki) == factory_key.curve, "ephemeral key not on the factory curve"
    content = sd["encap_content_info"]["content"].native
    h = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}[si["digest_algorithm"]["algorithm"].native]
    attrs = si["signed_attrs"]
    md = [a["values"][0].native for a in attrs if a["type"].native == "message_digest"][0]
    assert md == hashlib.new(h.name, content).digest(), "message digest mismatch"
    assert ecdsa_verify(eph_spki, attrs.untag().dump(), si["signature"].native, h), "signature does not verify"
    z = factory_key.ecdh(eph_spki)
    out = []
    for kpc in KeyPairContainers.load(content):
        spki = kpc["public"].dump()
        epki = _EncryptedPrivateKeyInfo.load(kpc["encryptedPrivate"].dump())
        oid = epki["encryption_algorithm"]["algorithm"].native
        bits = {OID_AES256_CBC: 256, OID_AES128_CBC: 128}[oid]
        iv = core.OctetString.load(epki["encryption_algorithm"]["parameters"].dump()).native
        pkcs8 = aes_cbc_pad(aes_key_from_z(z, bits), iv, epki["encrypted_data"].native, encrypt=False)
        kind = curve_of_spki(spki)
        assert _public_of_pkcs8(pkcs8, kind) == spki_parts(spki)[2], "private key does not match its public key"
        cert = [c for c in certs if _cert_spki(c) == spki]
        assert len(cert) == 1, "key without (exactly one) certificate"
        out.append(CheckedKey(kind, spki, cert[0], pkcs8))
    return out


def _public_of_pkcs8(pkcs8, kind):
    """The public key bytes a PKCS#8 private key implies."""
    info = _PrivateKeyInfo.load(pkcs8)
    if kind == "ed25519":
        priv = serialization.load_der_private_key(pkcs8, None)
        return priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    inner = _ECPrivateKey.load(info["private_key"].native)
    d = int.from_bytes(inner["private_key"].native, "big")
    return EcKey(kind, private=d).point_bytes()
