"""Rows of the store cannot be edited, swapped or copied without the master key.

Each test provisions keys, then edits the real database file with sqlite3 (as someone who can
write the file but does not have the master key), then makes the call the edit was meant to
open up. The call must fail with an integrity error (ERROR_STORAGE, "integrity error"), never
succeed. Sealed values are bound to their table, column and row; every column of sessions,
keys, PIN/PUK policies and PIN objects is covered by a row MAC (docs/storage.md).
"""

import sqlite3
import subprocess

import pytest

import sksissuer as s
from skshelpers import expect_error, find_session, sha256

DIGEST = sha256(b"row integrity")


def edit(store, *statements):
    """Runs SQL on the store file, committed, as an outsider would."""
    db = sqlite3.connect(str(store), timeout=30)
    try:
        for sql, *params in statements:
            db.execute(sql, tuple(params))
        db.commit()
    finally:
        db.close()


def column(store, sql, *params):
    db = sqlite3.connect(str(store), timeout=30)
    try:
        return db.execute(sql, params).fetchone()[0]
    finally:
        db.close()


def integrity_error(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except s.SksError as e:
        assert e.status == s.ERROR_STORAGE and "integrity error" in e.message, \
            f"expected an integrity error, got {e}"
        return
    raise AssertionError(f"{fn.__name__} succeeded on an edited store")


@pytest.fixture
def fresh(sks_binary, store, tmp_path):
    """A new device process (nothing cached) on the store, opened after the edit."""
    opened = []

    def make():
        d = s.Device(sks_binary, store, stderr_path=tmp_path / f"fresh{len(opened)}.stderr")
        opened.append(d)
        return d
    yield make
    for d in opened:
        d.close()


def sign(device, key, pin=b""):
    return device.sign_hashed_data(key.handle, s.SIG_ECDSA_SHA256, DIGEST, pin)


def pin_object(store, key):
    return column(store, "SELECT pin FROM keys WHERE handle = ?", key.handle)


def test_pin_blob_swap_between_keys(new_issuer, device, store, sks_binary):
    """Key A's sealed PIN copied onto key B's PIN object: A's PIN must not export B
    (`sks export --auth`)."""
    iss = new_issuer()
    pa = iss.create_pin_policy()
    a = iss.provision_key(pin_policy=pa, pin="1111", export_protection=s.PROTECTION_PIN)
    pb = iss.create_pin_policy()
    b = iss.provision_key(pin_policy=pb, pin="2222", export_protection=s.PROTECTION_PIN)
    iss.close()
    device.close()
    edit(store, ("UPDATE pins SET value = (SELECT value FROM pins WHERE handle = ?) WHERE handle = ?",
                 pin_object(store, a), pin_object(store, b)))
    res = subprocess.run([sks_binary, "--store", str(store), "export", "--handle", str(b.handle),
                          "--auth", "1111"], capture_output=True, timeout=60)
    assert res.returncode != 0, "key B exported with key A's PIN"
    assert b"integrity error" in res.stderr, res.stderr


def test_pin_blob_and_mac_swap(new_issuer, device, store, fresh):
    """The same with the row MAC copied too: the seal names the row, so the blob still fails."""
    iss = new_issuer()
    pa = iss.create_pin_policy()
    a = iss.provision_key(pin_policy=pa, pin="1111", export_protection=s.PROTECTION_PIN)
    pb = iss.create_pin_policy()
    b = iss.provision_key(pin_policy=pb, pin="1111", export_protection=s.PROTECTION_PIN)
    iss.close()
    # Rows otherwise equal (same policy shape, slot, count): copy A's whole PIN row state.
    pa_obj, pb_obj = pin_object(store, a), pin_object(store, b)
    edit(store, ("UPDATE pins SET value = (SELECT value FROM pins WHERE handle = ?1), policy = "
                 "(SELECT policy FROM pins WHERE handle = ?1) WHERE handle = ?2", pa_obj, pb_obj),
         ("UPDATE row_macs SET mac = (SELECT mac FROM row_macs WHERE tbl = 'pins' AND id = ?1)"
          " WHERE tbl = 'pins' AND id = ?2", pa_obj, pb_obj))
    integrity_error(fresh().export_key, b.handle, b"1111")


def test_private_key_blob_swap(new_issuer, device, store, fresh):
    iss = new_issuer()
    a = iss.provision_key()
    b = iss.provision_key()
    iss.close()
    edit(store, ("UPDATE keys SET private_key = (SELECT private_key FROM keys WHERE handle = ?)"
                 " WHERE handle = ?", a.handle, b.handle))
    integrity_error(sign, fresh(), b)


def test_private_key_blob_and_mac_swap(new_issuer, device, store, fresh):
    """Copying the row MAC along does not help: the MAC names the row's handle, and so does the
    seal of the private key."""
    iss = new_issuer()
    a = iss.provision_key()
    b = iss.provision_key()
    iss.close()
    edit(store, ("UPDATE keys SET private_key = (SELECT private_key FROM keys WHERE handle = ?1),"
                 " public_key = (SELECT public_key FROM keys WHERE handle = ?1) WHERE handle = ?2",
                 a.handle, b.handle),
         ("UPDATE row_macs SET mac = (SELECT mac FROM row_macs WHERE tbl = 'keys' AND id = ?1)"
          " WHERE tbl = 'keys' AND id = ?2", a.handle, b.handle))
    integrity_error(sign, fresh(), b)


def test_export_protection_edit(new_issuer, device, store, fresh):
    iss = new_issuer()
    key = iss.provision_key(export_protection=s.PROTECTION_NOT_ALLOWED)
    iss.close()
    expect_error(device.export_key, key.handle, codes=(s.ERROR_NOT_ALLOWED,))
    edit(store, ("UPDATE keys SET export_protection = 0 WHERE handle = ?", key.handle))
    integrity_error(fresh().export_key, key.handle)


def test_pin_policy_link_edit(new_issuer, device, store, fresh):
    """Unlinking a key from its PIN policy must not make it usable without the PIN."""
    iss = new_issuer()
    policy = iss.create_pin_policy()
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    edit(store, ("UPDATE keys SET pin_policy = 0, pin = 0 WHERE handle = ?", key.handle))
    integrity_error(sign, fresh(), key)


def test_pin_policy_relink_to_weaker_policy(new_issuer, device, store, fresh):
    """Pointing a key at another key's (weaker) policy and PIN object."""
    iss = new_issuer()
    strong = iss.create_pin_policy(retry_limit=3)
    key = iss.provision_key(pin_policy=strong, pin="2580")
    weak = iss.create_pin_policy(retry_limit=100)
    other = iss.provision_key(pin_policy=weak, pin="1111")
    iss.close()
    edit(store, ("UPDATE keys SET (pin_policy, pin) = (SELECT pin_policy, pin FROM keys WHERE handle = ?)"
                 " WHERE handle = ?", other.handle, key.handle))
    integrity_error(sign, fresh(), key, b"1111")


def lock(device, key, limit):
    for _ in range(limit):
        expect_error(sign, device, key, b"0000", codes=(s.ERROR_AUTHORIZATION,))
    assert device.get_key_protection_info(key.handle).protection_status & s.PROTSTAT_PIN_BLOCKED


def test_error_count_reset(new_issuer, device, store, fresh):
    iss = new_issuer()
    policy = iss.create_pin_policy(retry_limit=3)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    lock(device, key, 3)
    edit(store, ("UPDATE pins SET error_count = 0 WHERE handle = ?", pin_object(store, key)))
    integrity_error(sign, fresh(), key, b"2580")


def test_error_count_reset_then_legitimate_write(new_issuer, device, store, fresh):
    """A later change by the device to the edited row (a wrong PIN counted on it) must not
    give the edited row a fresh MAC."""
    iss = new_issuer()
    puk = iss.create_puk_policy("12345678", retry_limit=3)
    policy = iss.create_pin_policy(puk=puk, retry_limit=3)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    lock(device, key, 3)
    edit(store, ("UPDATE pins SET error_count = 0 WHERE handle = ?", pin_object(store, key)))
    # unlockKey writes the PIN object without unsealing it: the commit checks the old row.
    dev = fresh()
    integrity_error(dev.unlock_key, key.handle, b"12345678")
    integrity_error(sign, dev, key, b"2580")


def test_pin_retry_limit_edit(new_issuer, device, store, fresh):
    iss = new_issuer()
    policy = iss.create_pin_policy(retry_limit=3)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    lock(device, key, 3)
    edit(store, ("UPDATE pin_policies SET retry_limit = 10000 WHERE handle = ?", policy.handle))
    integrity_error(sign, fresh(), key, b"2580")


def test_puk_retry_limit_edit(new_issuer, device, store, fresh):
    iss = new_issuer()
    puk = iss.create_puk_policy("12345678", retry_limit=2)
    policy = iss.create_pin_policy(puk=puk, retry_limit=1)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    lock(device, key, 1)
    for _ in range(2):
        expect_error(device.unlock_key, key.handle, b"00000000", codes=(s.ERROR_AUTHORIZATION,))
    edit(store, ("UPDATE puk_policies SET retry_limit = 0, error_count = 0 WHERE handle = ?", puk.handle))
    integrity_error(fresh().unlock_key, key.handle, b"12345678")


def test_session_reopened(new_issuer, device, store, fresh):
    """The session's open flag decides whether its keys are usable."""
    iss = new_issuer()
    key = iss.provision_key()
    iss.close()
    session = column(store, "SELECT session FROM keys WHERE handle = ?", key.handle)
    edit(store, ("UPDATE sessions SET key_limit = key_limit + 5 WHERE handle = ?", session))
    integrity_error(sign, fresh(), key)


def test_copied_row_without_mac(new_issuer, device, store, fresh):
    """A row added outside the device (here: a copy of a non-exportable key made exportable)
    has no valid MAC."""
    iss = new_issuer()
    key = iss.provision_key(export_protection=s.PROTECTION_NOT_ALLOWED)
    iss.close()
    edit(store, ("INSERT INTO keys (session, id, pin_policy, pin, device_pin, pin_caching, biometric,"
                 " export_protection, delete_protection, app_usage, friendly_name, key_algorithm,"
                 " key_parameters, endorsed, public_key, private_key, symmetric_length, certificates,"
                 " ee_sha256, key_backup, mac) SELECT session, 'copy', pin_policy, pin, device_pin,"
                 " pin_caching, biometric, 0, delete_protection, app_usage, friendly_name, key_algorithm,"
                 " key_parameters, endorsed, public_key, private_key, symmetric_length, NULL, NULL,"
                 " key_backup, mac FROM keys WHERE handle = ?", key.handle))
    copy = column(store, "SELECT max(handle) FROM keys")
    integrity_error(fresh().export_key, copy)


def test_unchanged_store_still_works(new_issuer, device, store, fresh):
    """The control: the same calls on an untouched store succeed, in a new process too."""
    iss = new_issuer()
    policy = iss.create_pin_policy(retry_limit=3)
    key = iss.provision_key(pin_policy=policy, pin="2580", export_protection=s.PROTECTION_PIN)
    plain = iss.provision_key()
    iss.close()
    dev = fresh()
    sign(dev, key, b"2580")
    sign(dev, plain)
    dev.export_key(key.handle, b"2580")


@pytest.mark.parametrize("old", ["sks-1", "sks-2"])
def test_old_schema_refused(store, sks_binary, old):
    """sks-2 had no record of the queued post operations in the session row: such a store is
    refused as a whole (made here by dropping the column, as an sks-2 store lacks it)."""
    statements = [("UPDATE meta SET value = CAST(? AS BLOB) WHERE name = 'format'", old)]
    if old == "sks-2":
        statements.insert(0, ("ALTER TABLE sessions DROP COLUMN post_ops_queued",))
    edit(store, *statements)
    res = subprocess.run([sks_binary, "--store", str(store), "list"], capture_output=True, timeout=60)
    assert res.returncode != 0
    assert old.encode() in res.stderr and b"sks-3" in res.stderr, res.stderr


def test_post_operation_retargeted(new_issuer, device, store, ec_kmk):
    """A queued postUnlockKey pointed at another locked key (of another issuer) must not
    unlock it when the session closes."""
    mine = new_issuer(kmk=ec_kmk)
    policy = mine.create_pin_policy(retry_limit=1)
    own = mine.provision_key(pin_policy=policy, pin="2580")
    mine.close()
    other = new_issuer()
    victim_policy = other.create_pin_policy(retry_limit=1)
    victim = other.provision_key(pin_policy=victim_policy, pin="1111")
    other.close()
    for key in (own, victim):
        lock(device, key, 1)
    iss = new_issuer()
    iss.post_unlock_key(own, kmk=ec_kmk)
    edit(store, ("UPDATE post_ops SET target = ? WHERE target = ?", victim.handle, own.handle))
    integrity_error(iss.close)
    assert device.get_key_protection_info(victim.handle).protection_status & s.PROTSTAT_PIN_BLOCKED


def test_session_key_management_key_edit(new_issuer, device, store, fresh, ec_kmk, rsa_kmk):
    """Replacing a closed session's key management key (who may update, unlock or delete its
    keys later) is detected, whether the session is used or only listed."""
    iss = new_issuer(kmk=ec_kmk)
    policy = iss.create_pin_policy(retry_limit=1)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    lock(device, key, 1)
    edit(store, ("UPDATE sessions SET kmk = ? WHERE handle = ?", s.spki(rsa_kmk.public_key()), iss.handle))
    dev = fresh()
    integrity_error(dev.enumerate_provisioning_sessions, 0, False)
    intruder = new_issuer()
    integrity_error(intruder.post_unlock_key, key, kmk=rsa_kmk)
    assert device.get_key_protection_info(key.handle).protection_status & s.PROTSTAT_PIN_BLOCKED


# ---- the schema is part of the file: nothing in it may run for the device (docs/storage.md) ----

def refused_at_open(store, sks_binary, *names):
    """A new process refuses the store, naming what is not the device's own schema."""
    res = subprocess.run([sks_binary, "--store", str(store), "list"], capture_output=True, timeout=60)
    assert res.returncode != 0, res.stdout
    assert b"integrity error" in res.stderr and b"schema" in res.stderr, res.stderr
    for name in names:
        assert name.encode() in res.stderr, res.stderr


STRIP_PROTECTION = """CREATE TRIGGER evil AFTER UPDATE ON {table} BEGIN
    UPDATE keys SET pin_policy = 0, pin = 0, export_protection = 0 WHERE handle = {handle};
    UPDATE pins SET error_count = 0; END;"""


def edit_script(store, sql):
    db = sqlite3.connect(str(store), timeout=30)
    try:
        db.executescript(sql)
        db.commit()
    finally:
        db.close()


def still_protected(fresh, key):
    """The key still asks for its PIN: signing and exporting without it fail."""
    dev = fresh()
    expect_error(sign, dev, key, codes=(s.ERROR_AUTHORIZATION,))
    with pytest.raises(s.SksError):
        dev.export_key(key.handle, b"")


def test_planted_trigger_refused_at_open(new_issuer, device, store, fresh, sks_binary, tmp_path):
    """A trigger added with the sqlite3 shell would run inside the device's own transaction
    (the first PIN try updates meta "tries") and get its changes MACed: the PIN and export
    protection of a key stripped, its error count reset. The store is refused instead."""
    iss = new_issuer()
    policy = iss.create_pin_policy(retry_limit=3)
    key = iss.provision_key(pin_policy=policy, pin="1234", export_protection=s.PROTECTION_NOT_ALLOWED)
    iss.close()
    edit_script(store, STRIP_PROTECTION.format(table="meta", handle=key.handle))
    refused_at_open(store, sks_binary, "trigger evil")
    dev = s.Device(sks_binary, store, stderr_path=tmp_path / "planted.stderr")
    try:
        with pytest.raises((s.SksError, s.DeviceDied, OSError)):
            sign(dev, key, b"0000")  # one wrong PIN try by anyone would fire the trigger
    finally:
        dev.close()
    edit_script(store, "DROP TRIGGER evil;")
    still_protected(fresh, key)


def test_trigger_planted_while_the_device_is_open(new_issuer, device, store, fresh):
    """A device process already open (sks serve --stdio) notices the schema change at its
    next transaction and refuses the call; the trigger never fires."""
    iss = new_issuer()
    policy = iss.create_pin_policy(retry_limit=3)
    key = iss.provision_key(pin_policy=policy, pin="1234", export_protection=s.PROTECTION_NOT_ALLOWED)
    iss.close()
    sign(device, key, b"1234")
    edit_script(store, STRIP_PROTECTION.format(table="pins", handle=key.handle))
    integrity_error(sign, device, key, b"0000")
    integrity_error(sign, device, key, b"1234")
    edit_script(store, "DROP TRIGGER evil;")
    still_protected(fresh, key)
    sign(device, key, b"1234")  # the original schema is back: the open device goes on


@pytest.mark.parametrize("name,sql", [
    ("view keys_view", "CREATE VIEW keys_view AS SELECT * FROM keys;"),
    ("index evil_idx", "CREATE INDEX evil_idx ON keys(abs(pin));"),
    ("table keys", "ALTER TABLE keys ADD COLUMN extra INTEGER NOT NULL DEFAULT 0;"),
    ("table evil_table", "CREATE TABLE evil_table (x);"),
    # error_count's DEFAULT rewritten in place: an INSERT that names no count would start at -100
    ("table pins", "PRAGMA writable_schema = 1; UPDATE sqlite_master SET sql = replace(sql,"
                   " 'error_count INTEGER NOT NULL DEFAULT 0', 'error_count INTEGER NOT NULL DEFAULT -100')"
                   " WHERE name = 'pins'; PRAGMA writable_schema = 0;"),
    ("index keys_ee", "DROP INDEX keys_ee;"),
])
def test_schema_edit_refused(new_issuer, device, store, sks_binary, name, sql):
    iss = new_issuer()
    iss.provision_key()
    iss.close()
    edit_script(store, sql)
    refused_at_open(store, sks_binary, name)


def test_schema_edit_refused_by_an_open_device(new_issuer, device, store):
    iss = new_issuer()
    policy = iss.create_pin_policy(retry_limit=3)
    key = iss.provision_key(pin_policy=policy, pin="1234")
    iss.close()
    sign(device, key, b"1234")
    edit_script(store, "CREATE INDEX evil_idx ON pins(abs(error_count));")  # row MACs alone would not see it
    integrity_error(sign, device, key, b"1234")


def test_store_with_the_old_skip_trigger_is_brought_up_to_date(new_issuer, device, store, fresh):
    """Stores made before this check had sks's own trigger skip_requests_gone and no key_owners
    table: opening drops exactly that trigger and adds the table."""
    iss = new_issuer()
    key = iss.provision_key()
    iss.close()
    edit_script(store, "DROP TABLE key_owners; CREATE TRIGGER IF NOT EXISTS skip_requests_gone AFTER DELETE ON"
                       " sessions BEGIN DELETE FROM skip_requests WHERE session = OLD.handle; END;")
    sign(fresh(), key)
    db = sqlite3.connect(str(store), timeout=30)
    try:
        entries = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    finally:
        db.close()
    assert "skip_requests_gone" not in entries and "key_owners" in entries


def queue_delete(new_issuer, ec_kmk):
    """A closed session's PIN-protected key, and a new session that queued postDeleteKey on it
    (and owns a key of its own, so that it has something to close for)."""
    from test_provisioning_post import provision_target
    _, old = provision_target(new_issuer, ec_kmk)
    iss = new_issuer()
    iss.provision_key()
    iss.post_delete_key(old, kmk=ec_kmk)
    return iss, old


def test_queued_post_delete_dropped(new_issuer, device, store, ec_kmk):
    """Review F3: the issuer revokes a key with postDeleteKey; an outsider deletes the queued
    row from the file (no master key needed: deleting leaves no MAC to check). The close must
    fail with an integrity error instead of telling the issuer the key is gone while it still
    signs; the target is untouched."""
    iss, old = queue_delete(new_issuer, ec_kmk)
    assert column(store, "SELECT count(*) FROM post_ops") == 1
    edit(store, ("DELETE FROM post_ops",))
    integrity_error(iss.close)
    assert old.handle in device.list_keys(), "the failed close must change nothing of the target"
    assert find_session(device, iss.handle) == (None, None), "a failed close terminates its session"
    assert device.get_key_attributes(old.handle).certificate_path == old.certificate_path


def locked_key(new_issuer, device, kmk):
    """A key of a session under kmk whose PIN (retry limit 1) is locked: a postUnlockKey target."""
    mine = new_issuer(kmk=kmk)
    own = mine.provision_key(pin_policy=mine.create_pin_policy(retry_limit=1), pin="2580")
    mine.close()
    lock(device, own, 1)
    return own


def test_queued_post_unlock_dropped(new_issuer, device, store, ec_kmk):
    """The same for postUnlockKey: dropping its row must not let the close succeed."""
    own = locked_key(new_issuer, device, ec_kmk)
    iss = new_issuer()
    iss.provision_key()
    iss.post_unlock_key(own, kmk=ec_kmk)
    edit(store, ("DELETE FROM post_ops",))
    integrity_error(iss.close)
    assert device.get_key_protection_info(own.handle).protection_status & s.PROTSTAT_PIN_BLOCKED


def test_one_of_several_queued_post_operations_dropped(new_issuer, device, store, ec_kmk):
    """Two operations queued, the postDeleteKey's row deleted, the postUnlockKey's kept: the
    rows present are not what was queued, so neither is applied."""
    from test_provisioning_post import provision_target
    _, doomed = provision_target(new_issuer, ec_kmk)
    own = locked_key(new_issuer, device, ec_kmk)
    iss = new_issuer()
    iss.provision_key()
    iss.post_delete_key(doomed, kmk=ec_kmk)
    iss.post_unlock_key(own, kmk=ec_kmk)
    edit(store, ("DELETE FROM post_ops WHERE target = ?", doomed.handle))
    integrity_error(iss.close)
    assert doomed.handle in device.list_keys()
    assert device.get_key_protection_info(own.handle).protection_status & s.PROTSTAT_PIN_BLOCKED


def test_queued_post_operations_and_their_record_dropped(new_issuer, device, store, ec_kmk):
    """Deleting the rows and clearing the session's record of them: the session row no longer
    matches its MAC."""
    iss, old = queue_delete(new_issuer, ec_kmk)
    edit(store, ("DELETE FROM post_ops",),
         ("UPDATE sessions SET post_ops_queued = x'' WHERE handle = ?", iss.handle))
    integrity_error(iss.close)
    assert old.handle in device.list_keys()


def test_queued_post_delete_intact_still_applies(new_issuer, device, store, ec_kmk):
    """The control: untouched, the queued postDeleteKey removes the key at close."""
    iss, old = queue_delete(new_issuer, ec_kmk)
    iss.close()
    assert old.handle not in device.list_keys()
    assert column(store, "SELECT count(*) FROM post_ops") == 0
