"""Assertion helpers shared by the provisioning tests."""

import hashlib
import subprocess

import sksissuer as s


def expect_error(fn, *args, codes=(), **kw):
    """Calls fn and returns the SksError it must raise. `codes`: the acceptable statuses
    (empty: any non-zero status)."""
    try:
        result = fn(*args, **kw)
    except s.SksError as e:
        if codes:
            assert e.status in codes, (
                f"{e.method} returned {s.STATUS_NAMES.get(e.status, e.status)} ({e.message}); "
                f"expected {[s.STATUS_NAMES[c] for c in codes]}")
        return e
    name = getattr(fn, "__name__", str(fn))
    raise AssertionError(f"{name} succeeded (returned {result!r}) but must fail"
                         + (f" with {[s.STATUS_NAMES[c] for c in codes]}" if codes else ""))


def find_session(device, handle):
    """The enumerated session with this handle: (session, is_open) or (None, None)."""
    for is_open in (True, False):
        for sess in device.list_sessions(is_open):
            if sess.provisioning_handle == handle:
                return sess, is_open
    return None, None


def assert_session_state(device, issuer, is_open):
    sess, state = find_session(device, issuer.handle)
    assert sess is not None, f"session {issuer.handle} is not enumerated"
    assert state == is_open, f"session {issuer.handle} open={state}, expected open={is_open}"
    return sess


def assert_no_trace(device, issuer, key_handles=()):
    """A failed/aborted session must be gone with everything it created."""
    for sess in device.all_sessions():
        assert sess.provisioning_handle != issuer.handle, \
            f"aborted session {issuer.handle} is still enumerated"
        assert sess.server_session_id != issuer.server_session_id, \
            "a session with the aborted session's serverSessionId is still enumerated"
    handles = set(key_handles) | {k.handle for k in issuer.keys.values()}
    listed = device.list_keys()
    for h in handles:
        assert h not in listed, f"key {h} of the aborted session is still enumerated"
        e = expect_error(device.get_key_attributes, h)
        assert e.status == s.ERROR_NO_KEY, (
            f"getKeyAttributes({h}) of an aborted session returned "
            f"{s.STATUS_NAMES.get(e.status)} ({e.message}), expected ERROR_NO_KEY")
    e = expect_error(device.abort_provisioning_session, issuer.handle)
    assert e.status == s.ERROR_NO_SESSION, (
        f"abortProvisioningSession({issuer.handle}) of a removed session returned "
        f"{s.STATUS_NAMES.get(e.status)} ({e.message}), expected ERROR_NO_SESSION")


def assert_key_gone(device, handle):
    assert handle not in device.list_keys(), f"key {handle} is still enumerated"
    expect_error(device.get_key_attributes, handle, codes=(s.ERROR_NO_KEY,))


def sha256(data):
    return hashlib.sha256(data).digest()


def sign_and_verify(device, key, algorithm=None, pin=None, data=None, spki=None):
    """signHashedData with the key and verify the result independently."""
    info = s.load_public_key(spki or key.certified_key or key.public_key)
    if algorithm is None:
        algorithm = {"rsa": s.SIG_RSA_SHA256, "ec": s.SIG_ECDSA_SHA256,
                     "ed25519": s.SIG_ED25519}[info.kind]
    if data is None:
        h = s.hash_for(algorithm)
        data = s.digest(h, b"signed by sks " + algorithm.encode()) if h else sha256(b"x")
        if algorithm == s.SIG_ED25519:
            data = b"an Ed25519 message of arbitrary length"
    pin = key.pin if pin is None else pin
    sig = device.sign_hashed_data(key.handle, algorithm, data, pin or b"")
    s.verify_signature(spki or key.certified_key or key.public_key, algorithm, data, sig)
    return sig


def protection(device, key):
    return device.get_key_protection_info(key.handle)


def run_ok(*args, env=None, timeout=120):
    """Runs a program that must succeed; its stdout as text."""
    res = subprocess.run([str(a) for a in args], capture_output=True, timeout=timeout, env=env)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout.decode()


def handle_of(sks_binary, store, name):
    """The handle of the key called `name`, from `sks list`."""
    for line in run_ok(sks_binary, "--store", store, "list").splitlines():
        if line.startswith("key ") and line.endswith(": " + name):
            return int(line[4:].split(":")[0])
    raise AssertionError(f"no key {name}")


def memory_holds(pid, needle):
    """Whether any readable mapping of process pid holds the bytes (root reads /proc/PID/mem)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            # Terabyte-sized readable mappings are a sanitizer's shadow memory (scripts/test.sh
            # --sanitize), not where a program keeps its buffers.
            if end - start > 1 << 30:
                continue
            if mapping_holds(mem, start, end, needle):
                return True
    return False


def mapping_holds(mem, start, end, needle, chunk=4 << 20):
    """Reads the mapping in chunks that overlap by len(needle) - 1, so no match is split."""
    pos = start
    while pos < end:
        try:
            mem.seek(pos)
            data = mem.read(min(chunk + len(needle) - 1, end - pos))
        except (OSError, ValueError, OverflowError):
            return False
        if needle in data:
            return True
        pos += chunk
    return False
