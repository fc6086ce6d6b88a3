"""SKIP packages into the store: `sks skip request` on the device, packages made by the
independent Python issuer (skipissuer.py) for every factory curve with device keys of
every type, under AES-128 and AES-256, imported with `sks skip import`; then every key signs
through the provider and the signature verifies with the default provider against the
certificate the issuer made. Packages from `sks skip issue` import too, and the Python side
takes them apart and checks them.
"""

import pytest

import skipissuer as si
import skiptools as st


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return st.make_pki(tmp_path_factory.mktemp("pki"))


def _import(store, pkg, trust, name="package.der"):
    path = store.write(name, pkg.der())
    return store.import_package(path, trust), path


def _check_imported(store, pkg, pki):
    """Every key of the package is in the store with its verified path, the factory key has
    its certificate, and each key signs through the provider."""
    root, issuing, _ = pki
    keys = store.key_paths()
    by_ee = {path[0]: (h, name, path) for h, (name, path) in keys.items() if path}
    for k in pkg.keys:
        assert k.cert in by_ee, f"the {k.kind} key is not in the store"
        handle, name, path = by_ee[k.cert]
        assert path == [k.cert, issuing.der, root.der], f"the {k.kind} key's certificate path is not [EE, CA, root]"
        assert name.endswith(k.kind), f"friendly name {name!r} is not the certificate's CN"
        store.sign_and_verify(handle, k.cert, k.kind)
    assert pkg.factory_cert in by_ee, "the factory key did not get its certificate"
    assert not store.open_skip_sessions(), "the request is still pending after the import"


@pytest.mark.parametrize("aes_bits", [128, 256])
@pytest.mark.parametrize("curve", si.CURVES)
def test_every_curve_every_key_type(tmp_path, pki, curve, aes_bits):
    store = st.SkipStore(tmp_path)
    req = store.request(curve, pki[2])
    assert req.curve == curve
    pkg = si.Package.issue(req, pki[1], si.DEVICE_KEY_TYPES, aes_bits)
    res, path = _import(store, pkg, pki[2])
    assert f"imported {len(si.DEVICE_KEY_TYPES)} keys" in res.stdout.decode()
    _check_imported(store, pkg, pki)
    # Importing the same package again changes nothing, and says so.
    before = store.snapshot()
    again = store.import_package(path, pki[2])
    assert "already imported, nothing changed" in again.stdout.decode()
    assert store.snapshot() == before, "a second import changed the store"


@pytest.mark.parametrize("options", [
    {"with_parameters": False, "with_public_key": False},
    {"with_parameters": True, "with_public_key": False},
    {"with_parameters": True, "with_public_key": True},
], ids=["bare", "parameters", "parameters+public"])
def test_rfc5915_optional_fields(tmp_path, pki, options):
    store = st.SkipStore(tmp_path)
    req = store.request("brainpoolP384r1", pki[2])
    pkg = si.Package.issue(req, pki[1], ["secp384r1", "brainpoolP320r1", "secp521r1"], 256, pkcs8_options=options)
    _import(store, pkg, pki[2])
    _check_imported(store, pkg, pki)


def test_pem_package_and_signed_content_without_attributes(tmp_path, pki):
    store = st.SkipStore(tmp_path)
    req = store.request("secp256r1", pki[2])
    pkg = si.Package.issue(req, pki[1], ["ed25519", "secp256r1"], 128)
    pkg.signed_attributes = False
    path = store.write("package.pem", pkg.pem())
    res = store.import_package(path, pki[2])
    assert "imported 2 keys" in res.stdout.decode()
    _check_imported(store, pkg, pki)


def test_a_refused_package_leaves_the_request_for_a_good_one(tmp_path, pki):
    store = st.SkipStore(tmp_path)
    req = store.request("secp256r1", pki[2])
    bad = si.Package.issue(req, pki[1], ["secp256r1"], 256)
    bad.keys[0].ciphertext = bad.keys[0].ciphertext[:-1] + bytes([bad.keys[0].ciphertext[-1] ^ 0x55])
    res = store.import_package(store.write("bad.der", bad.der()), pki[2], check=False)
    assert res.returncode != 0
    assert len(store.open_skip_sessions()) == 1, "the refused package ended the pending request"
    good = si.Package.issue(req, pki[1], ["secp256r1", "ed25519"], 256)
    _import(store, good, pki[2])
    _check_imported(store, good, pki)


# ------------------------------------------------------------------ sks skip issue


def _ca_files(directory, issuing):
    from cryptography.hazmat.primitives import serialization
    key = directory / "ca.key"
    key.write_bytes(issuing.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    cert = directory / "ca.pem"
    cert.write_bytes(issuing.pem + issuing.parent.pem)
    return key, cert


@pytest.mark.parametrize("curve,aes", [("secp256r1", "256"), ("brainpoolP320r1", "128"), ("secp521r1", "256")])
def test_packages_from_sks_skip_issue_import(tmp_path, pki, curve, aes):
    store = st.SkipStore(tmp_path)
    store.request(curve, pki[2], name="request.pem")
    ca_key, ca_cert = _ca_files(tmp_path, pki[1])
    types = [si.CLI_NAMES[t] for t in si.DEVICE_KEY_TYPES]
    args = ["skip", "issue", "--request", tmp_path / "request.pem", "--ca-key", ca_key, "--ca-cert", ca_cert, "--aes",
            aes, "--out", tmp_path / "issued.der"]
    for t in types:
        args += ["--key-type", t]
    store.sks(*args)
    res = store.import_package(tmp_path / "issued.der", pki[2])
    assert f"imported {len(types)} keys" in res.stdout.decode()
    for h, (name, path) in store.key_paths().items():
        kind = si.curve_of_spki(si._cert_spki(path[0]))
        store.sign_and_verify(h, path[0], kind)


@pytest.mark.parametrize("curve", ["secp256r1", "brainpoolP320r1", "brainpoolP512r1"])
def test_python_checks_packages_from_sks_skip_issue(tmp_path, pki, curve):
    """The factory key is Python's here, so Python can decrypt and check everything."""
    factory = si.EcKey(curve)
    (tmp_path / "py-request.der").write_bytes(si.make_request(factory, "python factory"))
    ca_key, ca_cert = _ca_files(tmp_path, pki[1])
    types = ["Ed25519", "P-384", "brainpoolP320r1", si.CLI_NAMES[curve]]
    args = ["skip", "issue", "--request", tmp_path / "py-request.der", "--ca-key", ca_key, "--ca-cert", ca_cert,
            "--out", tmp_path / "issued.der", "--aes", "128"]
    for t in types:
        args += ["--key-type", t]
    st.run([st.SKS, "--store", tmp_path / "unused.db", *args])
    keys = si.check_package((tmp_path / "issued.der").read_bytes(), factory, pki[0].der)
    assert [k.kind for k in keys] == ["ed25519", "secp384r1", "brainpoolP320r1", curve]


def test_ca_key_in_an_sks_store(tmp_path, pki):
    """`sks skip issue --ca-key sks:...`: the CA key signs from inside another store."""
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ca_store = st.SkipStore(ca_dir, "ca-store.db")
    ca_key, ca_cert = _ca_files(ca_dir, pki[1])
    ca_store.sks("import", "--name", "skip-ca", "--key", ca_key, "--cert", ca_cert)
    ca_key.unlink()
    store = st.SkipStore(tmp_path)
    store.request("secp384r1", pki[2])
    env = st.plain_env()
    env["OPENSSL_MODULES"] = str(st.BUILD)
    ca_store.sks("skip", "issue", "--request", tmp_path / "request.pem", "--ca-key", "sks:name=skip-ca",
                 "--ca-cert", ca_cert, "--key-type", "P-256", "--key-type", "Ed25519", "--out",
                 tmp_path / "issued.der", env=env)
    res = store.import_package(tmp_path / "issued.der", pki[2])
    assert "imported 2 keys" in res.stdout.decode()


def test_two_imports_at_once(tmp_path, pki):
    """Two processes import the same package together: one imports it, the other finds it
    imported; the keys are in the store once."""
    import subprocess
    store = st.SkipStore(tmp_path)
    req = store.request("secp256r1", pki[2])
    pkg = si.Package.issue(req, pki[1], ["secp256r1", "ed25519", "brainpoolP512r1"], 256)
    path = store.write("package.der", pkg.der())
    args = [str(st.SKS), "--store", str(store.db), "skip", "import", "--trust", str(pki[2]), str(path)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=st.plain_env())
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = sorted(b"already imported" in o[0] for o in outs)
    assert said == [False, True], outs
    assert len(store.key_paths()) == len(pkg.keys) + 1  # and the factory key
    _check_imported(store, pkg, pki)


def test_ca_key_uri_pin_never_shown(tmp_path, pki):
    """`--ca-key 'sks:...?pin-value=...'` that fails (wrong PIN) names the key, never the PIN."""
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ca_store = st.SkipStore(ca_dir, "ca-store.db")
    ca_key, ca_cert = _ca_files(ca_dir, pki[1])
    (ca_dir / "pin").write_text("2580\n")
    ca_store.sks("import", "--name", "skip-ca", "--key", ca_key, "--cert", ca_cert, "--pin-file", ca_dir / "pin")
    store = st.SkipStore(tmp_path)
    store.request("secp384r1", pki[2])
    env = st.plain_env()
    env["OPENSSL_MODULES"] = str(st.BUILD)
    secret = "Wr0ngSecret7"
    # A wrong PIN (refused when the CA signs) and a key that is not there (refused at load).
    for name, shown in (("skip-ca", "wrong PIN"), ("no-such-ca", "sks:name=no-such-ca?...")):
        res = ca_store.sks("skip", "issue", "--request", tmp_path / "request.pem",
                           "--ca-key", f"sks:name={name}?pin-value={secret}", "--ca-cert", ca_cert,
                           "--key-type", "P-256", "--out", tmp_path / "issued.der", env=env, check=False)
        err = res.stderr.decode()
        assert res.returncode != 0 and shown in err, err
        assert secret not in err + res.stdout.decode(), err
        assert not (tmp_path / "issued.der").exists()
