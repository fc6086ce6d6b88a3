"""The certificates of a SKIP package carry their purpose (issue 9): the package signer (the
ephemeral key's certificate) needs keyUsage digitalSignature and the SKIP package-signer
extended key usage (skipissuer.OID_SKIP_SIGNER_EKU, docs/skip.md); the factory certificate
must be an end entity without that usage. Before, any EC end-entity certificate under the
anchor could sign packages. Each package here is signed correctly by a key whose certificate
the trusted CA issued, and is refused by `sks skip import` and by the device itself, before
any decryption: the store unchanged, nothing counted, the request still pending.
"""

import pytest

import skipissuer as si
import skiptools as st

ANY_EKU = "2.5.29.37.0"
SERVER_AUTH = "1.3.6.1.5.5.7.3.1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return st.make_pki(tmp_path_factory.mktemp("pki"))


def _signer_cert(pki, pkg, fault):
    spki = pkg.ephemeral.spki()
    if fault == "no-eku":
        # What a device key's certificate looks like: EC, digitalSignature, no EKU.
        return pki[1].issue(spki, "an EC key under the anchor", key_usage="digitalSignature")
    if fault == "other-eku":
        return pki[1].issue(spki, "a TLS server", key_usage="digitalSignature", eku=[SERVER_AUTH])
    if fault == "any-eku":
        return pki[1].issue(spki, "anything", key_usage="digitalSignature", eku=[ANY_EKU])
    if fault == "no-digital-signature":
        return pki[1].issue(spki, "agreement only", signer=True, key_usage="keyAgreement")
    if fault == "no-key-usage":
        return pki[1].issue(spki, "no key usage", eku=[si.OID_SKIP_SIGNER_EKU])
    return pki[1].issue(spki, "a CA", signer=True, ca=True)


def _check_refused(store, pki, der, words):
    handle = store.open_skip_sessions()[0].provisioning_handle
    before = store.snapshot()
    res = store.import_package(store.write("package.der", der), pki[2], check=False)
    err = res.stderr.decode(errors="replace")
    assert res.returncode != 0, f"the package was accepted: {res.stdout.decode()}"
    assert all(w in err for w in words), err
    wire = store.skip_import_on_wire(handle, der)
    assert isinstance(wire, tuple), "the device imported the package"
    assert all(w in wire[1] for w in words), wire
    assert store.snapshot() == before
    assert store.failed_unwraps(handle) == 0
    assert len(store.open_skip_sessions()) == 1


@pytest.mark.parametrize("fault", ["no-eku", "other-eku", "any-eku", "no-digital-signature", "no-key-usage",
                                   "ca"])
def test_signer_without_the_signer_purpose(tmp_path, pki, fault):
    store = st.SkipStore(tmp_path)
    req = store.request("secp256r1", pki[2])
    pkg = si.Package.issue(req, pki[1], ["secp256r1"], 256)
    pkg.ephemeral_cert = _signer_cert(pki, pkg, fault)
    words = {"no-eku": "lacks the SKIP package-signer extended key usage",
             "other-eku": "lacks the SKIP package-signer extended key usage",
             "any-eku": "lacks the SKIP package-signer extended key usage",
             "no-digital-signature": "does not allow digitalSignature",
             "no-key-usage": "does not allow digitalSignature",
             "ca": "is a CA certificate"}[fault]
    _check_refused(store, pki, pkg.der(), ["signer's certificate", words])


@pytest.mark.parametrize("fault", ["signer-eku", "ca"])
def test_factory_certificate_without_its_purpose(tmp_path, pki, fault):
    store = st.SkipStore(tmp_path)
    req = store.request("secp256r1", pki[2])
    pkg = si.Package.issue(req, pki[1], ["secp256r1"], 256)
    if fault == "signer-eku":
        pkg.factory_cert = pki[1].issue(req.spki, req.subject, signer=True)
    else:
        pkg.factory_cert = pki[1].issue(req.spki, req.subject, ca=True)
    words = {"signer-eku": "carries the package-signer extended key usage", "ca": "is a CA certificate"}[fault]
    _check_refused(store, pki, pkg.der(), ["factory certificate", words])


def test_the_signer_purpose_is_enough(tmp_path, pki):
    """The same package with the signer's purpose imports (the refusals above are for it)."""
    store = st.SkipStore(tmp_path)
    req = store.request("secp256r1", pki[2])
    pkg = si.Package.issue(req, pki[1], ["secp256r1"], 256)
    res = store.import_package(store.write("package.der", pkg.der()), pki[2])
    assert "imported 1 key" in res.stdout.decode()
