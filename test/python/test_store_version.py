"""The store's version, by which a long-running device process knows its cached keys are still
current (device/generation.c), is SQLite's own WAL index: there is no file of ours beside the
store for a directory owner to point elsewhere, and every commit by every writer moves it.
These tests need root (they chown files and run commands as other users)."""

import grp
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import uuid

import pytest

import sksissuer as s
from skshelpers import handle_of, run_ok as run

ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
ERROR_NO_KEY = 0x07

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")




def sign(device, handle):
    return device.sign_hashed_data(handle, ECDSA_SHA256, b"x" * 32)


def test_planted_gen_symlink_changes_nothing(sks_binary, tmp_path):
    """The owner of the store's directory plants <store>.gen -> a root file; root then opens,
    writes and signs with the store. The root file keeps its owner, mode and bytes."""
    d = tmp_path / "owned-by-nobody"
    d.mkdir()
    db = d / "store.db"
    run(sks_binary, "--store", db, "init")
    nobody = pwd.getpwnam("nobody")
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    os.chown(db, nobody.pw_uid, nobody.pw_gid)       # the store belongs to nobody ...
    target = tmp_path / "root-secret"                 # ... the target to root
    target.write_bytes(b"root")
    os.chmod(target, 0o600)
    before = os.stat(target)
    os.symlink(target, str(db) + ".gen")

    run(sks_binary, "--store", db, "generate", "--name", "k", "--algorithm", "P-256")
    dev = s.Device(sks_binary, db, stderr_path=tmp_path / "device.stderr")
    try:
        assert len(sign(dev, handle_of(sks_binary, db, "k"))) == 64
    finally:
        dev.close()
    run(sks_binary, "--store", db, "delete", "--name", "k")

    after = os.stat(target)
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (0, 0, 0o600)
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
    assert target.read_bytes() == b"root"


def test_no_counter_file_beside_the_store(sks_binary, store):
    run(sks_binary, "--store", store, "generate", "--name", "k", "--algorithm", "P-256")
    assert not os.path.lexists(str(store) + ".gen")


def test_commit_by_any_sqlite_writer_is_seen(sks_binary, store, device):
    """A writer that knows nothing of sks (here Python's sqlite3) removes a cached key: the
    version moves with the commit itself, so the very next call misses the cache."""
    run(sks_binary, "--store", store, "generate", "--name", "k", "--algorithm", "P-256")
    h = handle_of(sks_binary, store, "k")
    for _ in range(3):
        sign(device, h)                               # cached now
    con = sqlite3.connect(str(store), isolation_level=None, timeout=30)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("DELETE FROM keys WHERE handle = ?", (h,))
        con.execute("COMMIT")
    finally:
        con.close()
    with pytest.raises(s.SksError) as e:
        sign(device, h)
    assert e.value.status == ERROR_NO_KEY


@pytest.fixture
def throwaway_member():
    """A user whose primary group is a new group, both removed afterwards."""
    name = "sksgen" + uuid.uuid4().hex[:8]
    subprocess.run(["groupadd", name], check=True, capture_output=True)
    try:
        subprocess.run(["useradd", "-M", "-N", "-g", name, "-s", "/usr/sbin/nologin", name], check=True,
                       capture_output=True)
        try:
            yield pwd.getpwnam(name), grp.getgrnam(name)
        finally:
            subprocess.run(["userdel", name], capture_output=True)
    finally:
        subprocess.run(["groupdel", name], capture_output=True)


def test_group_members_delete_is_seen_by_a_root_process(sks_binary, throwaway_member):
    """A store shared by a group (0660, setgid directory); root's long-running device holds a
    key cached; a group member (its own uid and gid, root's umask 022 in force when root
    opened the store) deletes the key; root's next signature with it is refused."""
    user, group = throwaway_member
    d = tempfile.mkdtemp(prefix="sks-group-")
    try:
        os.chown(d, 0, group.gr_gid)
        os.chmod(d, 0o2770)
        db = os.path.join(d, "store.db")
        old_umask = os.umask(0o022)
        try:
            run(sks_binary, "--store", db, "init")
            os.chown(db, 0, group.gr_gid)
            os.chmod(db, 0o660)
            # the member's own copy of the master key (a master key is never group-readable)
            member_key = os.path.join(d, "member.key")
            shutil.copyfile(db + ".key", member_key)
            os.chown(member_key, user.pw_uid, user.pw_gid)
            os.chmod(member_key, 0o400)
            run(sks_binary, "--store", db, "generate", "--name", "shared", "--algorithm", "P-256")
            h = handle_of(sks_binary, db, "shared")
            dev = s.Device(sks_binary, db, stderr_path=os.path.join(d, "device.stderr"))
        finally:
            os.umask(old_umask)
        try:
            for _ in range(3):
                sign(dev, h)                          # cached in root's process
            run("setpriv", f"--reuid={user.pw_uid}", f"--regid={group.gr_gid}", "--clear-groups",
                sks_binary, "--store", db, "--master-key", member_key, "delete", "--name", "shared")
            assert "shared" not in run(sks_binary, "--store", db, "list")
            with pytest.raises(s.SksError) as e:
                sign(dev, h)
            assert e.value.status == ERROR_NO_KEY
        finally:
            dev.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
