"""Key owners of a shared device (sksd) follow their keys: see also test_sksd_security.py
(test_owner_row_does_not_follow_a_reused_handle, test_trigger_planted_in_the_store_cannot_forge_an_owner)."""

import os
import shutil
import tempfile

from test_sksd import sign_request
from test_sksd_security import SKSD, UID_A, UID_B, calls_as, run, start_daemon


def test_updated_key_keeps_its_owner(new_issuer, device, store, ec_kmk):
    """The owner MAC names the key's public key; postUpdateKey gives the key a new one and the
    key keeps its owner (the control for test_owner_row_does_not_follow_a_reused_handle)."""
    a = new_issuer(kmk=ec_kmk)
    old = a.provision_key()
    a.close()
    run([SKSD, "--store", str(store), "--key-owner", f"#{old.handle}={UID_A}"])
    b = new_issuer()
    new = b.provision_key()
    b.post_update_key(new, old, kmk=ec_kmk)
    b.close()
    base = tempfile.mkdtemp(prefix="sks-owner-update-")
    os.chmod(base, 0o755)
    d = start_daemon({"base": base, "db": str(store)}, "update", ["--allow-uid", str(UID_A), "--allow-uid", str(UID_B)])
    try:
        (r,) = calls_as(UID_A, d.socket, [sign_request(old.handle, b"\x33" * 32)])
        assert r[0] == 0, r
        (r,) = calls_as(UID_B, d.socket, [sign_request(old.handle, b"\x33" * 32)])
        assert r is None or r[0] != 0, r
    finally:
        d.stop()
        shutil.rmtree(base, ignore_errors=True)
