"""Only client/ knows a wire method's bytes (issue 12, "One client"). The provider, its STORE
loader, the SKIP decoder, the engine and the tools call the typed client (client/sks_client.h);
none of them may encode a request or decode a reply by hand. This scans every tracked C file
outside the code that implements the wire format or its other end, for the codec's writers
and readers, method ids and raw transport calls.

SKS_SOURCE_DIR=/path/to/another/checkout points the scan at another tree (to see it fail on
code from before the client took over)."""

import os
import re
import subprocess

ROOT = os.environ.get("SKS_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# The wire format itself and the device ends of it (the software device, the SmartCard-HSM
# driver) and their tests.
EXEMPT_DIRS = ("client/", "wire/", "device/", "schsm/", "transport/", "test/")

# Files outside those that legitimately use the codec, each for a reason that is not a client
# building a request: keep this list short and explained.
EXEMPT_FILES = {
    # the issuer's side: MAC and attestation inputs are written in the SKS byte stream
    "tools/sks/issuer.c": "MAC and attestation inputs",
    # DER written with the byte writer (the package's own ASN.1), no wire method
    "tools/sks/skip_build.c": "DER of a SKIP package",
    # the device end: sksd and the virtual card answer requests (error replies, status words)
    "tools/sksd/sksd.c": "sksd's error replies (device end)",
    "tools/sks-vcard/sks-vcard.c": "the card's error replies (device end)",
    "tools/sks-vcard/apdu.c": "APDU status words (device end)",
    # fuzzers drive the device end, as tests do
    "fuzz/fuzz_wire.c": "fuzzes the dispatcher",
    "fuzz/fuzz_wire_provisioned.c": "fuzzes the dispatcher; reads a reply's status to know when to restore the template",
    # the issuer's side again, for the fuzzer of the MAC-protected provisioning methods: it builds
    # requests with the client and the MAC, attestation and target-reference inputs with the codec
    "fuzz/fuzz_provisioning.c": "MAC and attestation inputs of the issuer it plays; its seed inputs",
    "fuzz/wire_reply.h": "checks that every reply of the fuzzed dispatcher is well formed",
    "fuzz/fuzz_apdu.c": "fuzzes the card's APDU layer",
    "fuzz/fuzz_schsm_manage.c": "fuzzes the SmartCard-HSM driver's key management (device end)",
}

# What building or parsing a method's bytes by hand looks like.
FORBIDDEN = [
    (re.compile(r"\bsks_buf_(byte|bool|ushort|uint|array|string|blob)\s*\("), "codec writer"),
    (re.compile(r"\bsks_get_(byte|bool|ushort|uint|array|blob|id|uri|string)\s*\("), "codec reader"),
    (re.compile(r"\bsks_reader\b|\bsks_reader_\w+\s*\("), "codec reader"),
    (re.compile(r"\bSKS_METHOD_\w+"), "method id"),
    (re.compile(r"\bsks_device_call\b"), "hand-made device call"),
    (re.compile(r"(->|\.)call\s*\("), "raw transport call (bypasses the client)"),
]

# The provider's own directories: never exempt, whatever the list above says.
PROVIDER = ("provider/", "store/", "keymgmt/", "signature/", "exchange/", "asymcipher/", "cms/", "engine/")

COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
STRING = re.compile(r'"(\\.|[^"\\\n])*"')


def c_files():
    out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--", "*.c", "*.h"], check=True,
                         capture_output=True).stdout
    return [f for f in out.decode().split("\0") if f]


def code_lines(text):
    """The file's lines with comments and string literals blanked (line numbers kept)."""
    text = COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    text = STRING.sub('""', text)
    return text.splitlines()


def violations(path, text):
    found = []
    for n, line in enumerate(code_lines(text), 1):
        for pattern, what in FORBIDDEN:
            if pattern.search(line):
                found.append(f"{path}:{n}: {what}: {line.strip()[:100]}")
    return found


def test_only_client_encodes_and_decodes_methods():
    files = c_files()
    assert any(f.startswith("provider/") for f in files), "no provider sources found: wrong ROOT?"
    offenders = []
    for f in files:
        if f.startswith(EXEMPT_DIRS):
            continue
        if f in EXEMPT_FILES and not f.startswith(PROVIDER):
            continue
        with open(os.path.join(ROOT, f), encoding="utf-8", errors="replace") as fh:
            offenders += violations(f, fh.read())
    assert not offenders, ("only client/ may build or parse a method's bytes; call client/sks_client.h instead:\n"
                           + "\n".join(offenders))


def test_exemptions_still_exist():
    """An exemption for a file that is gone would silently cover a new one of the same name."""
    files = set(c_files())
    assert not [f for f in EXEMPT_FILES if f not in files]


def test_the_patterns_catch_what_the_provider_did_by_hand():
    """The constructs provider/device_ops.c and store/sks_store.c used before the client took
    over are caught; comments and strings naming them are not."""
    before = """
        sks_buf_byte(req, method);
        sks_buf_uint(req, k->handle);
        rc = sks_device_call(k->ctx, method_name, req, &reply, &r, &status);
        s = sks_get_array(&r, "result");
        sks_reader r;
        sym = sks_get_ushort(&r, "symmetricKeyLength");
        if (!t->call(t, &req, 1, &reply, err, sizeof(err)))
        call_begin(&c, SKS_METHOD_GET_KEY_ATTRIBUTES, "getKeyAttributes", err);
    """
    assert len(violations("x.c", before)) == 8
    clean = """
        /* sks_buf_uint(req, handle) and sks_get_array(&r) are the client's business */
        sks_raise(ctx, SKS_R_DEVICE, "sks_get_uint( in a message");
        sks_buf_put(&der, p, n);
        sks_buf_init(&b);
        ok = sks_client_sign_hashed_data_to(t, &ctx->bufs, &a, data, out, size, out_len, &e);
        static int sks_get_params(void *provctx, OSSL_PARAM params[])
    """
    assert violations("x.c", clean) == []
