"""The files around a store: the master key is refused when others can reach it or someone
else owns it; a new store is made private through its descriptor, never through a planted
symlink; no default path lies under /tmp; SKS_DEVICE, SKS_STORE and SKS_MASTER_KEY are ignored
by set-user-ID / set-group-ID programs. Root is needed for the ownership cases."""

import grp
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
import uuid

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def run_sks(sks_binary, *args, env=None):
    res = subprocess.run([str(sks_binary)] + [str(a) for a in args], capture_output=True, timeout=60, env=env)
    return res.returncode, (res.stdout + res.stderr).decode(errors="replace")


# ---- the master key file

@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620, 0o644])
def test_master_key_reachable_by_others_is_refused(sks_binary, store, mode):
    key = str(store) + ".key"
    os.chmod(key, mode)
    rc, out = run_sks(sks_binary, "--store", store, "list")
    assert rc != 0, f"a master key of mode {mode:04o} was used: {out}"
    assert key in out and f"{mode:04o}" in out and "group or others" in out, out


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_master_key_is_accepted(sks_binary, store, mode):
    os.chmod(str(store) + ".key", mode)
    rc, out = run_sks(sks_binary, "--store", store, "list")
    assert rc == 0, out


@needs_root
def test_master_key_of_another_user_is_refused(sks_binary, store):
    key = str(store) + ".key"
    nobody = pwd.getpwnam("nobody")
    os.chown(key, nobody.pw_uid, nobody.pw_gid)
    rc, out = run_sks(sks_binary, "--store", store, "list")
    assert rc != 0, out
    assert key in out and f"uid {nobody.pw_uid}" in out, out


def test_master_key_must_be_a_regular_file(sks_binary, store, tmp_path):
    d = tmp_path / "dir.key"
    d.mkdir(mode=0o700)
    rc, out = run_sks(sks_binary, "--store", store, "--master-key", d, "list")
    assert rc != 0 and str(d) in out, out
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)              # would block a plain open() for ever
    rc, out = run_sks(sks_binary, "--store", store, "--master-key", fifo, "list")
    assert rc != 0 and str(fifo) in out and "regular file" in out, out


# ---- creating a store

def test_init_does_not_follow_a_planted_store_symlink(sks_binary, tmp_path):
    """The directory's owner plants store.db -> a file of the victim's; `sks init` must not
    create or chmod that file, and fails with a clear error."""
    victim = tmp_path / "victim-file"
    db = tmp_path / "store.db"
    os.symlink(victim, db)
    rc, out = run_sks(sks_binary, "--store", db, "init")
    assert rc != 0, out
    assert not victim.exists(), "init wrote through the planted symlink"
    assert str(db) in out, out
    # an existing target keeps its mode
    victim.write_bytes(b"")
    os.chmod(victim, 0o644)
    rc, out = run_sks(sks_binary, "--store", db, "init")
    assert rc != 0
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o644


def test_new_store_is_private_whatever_the_umask(sks_binary, tmp_path):
    db = tmp_path / "store.db"
    old = os.umask(0)
    try:
        rc, out = run_sks(sks_binary, "--store", db, "init")
    finally:
        os.umask(old)
    assert rc == 0, out
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(db) + ".key").st_mode) == 0o600


# ---- default paths and environment

@pytest.fixture
def throwaway_user():
    """A user with its own group and a home directory of its own, all removed afterwards."""
    name = "sksfiles" + uuid.uuid4().hex[:8]
    base = tempfile.mkdtemp(prefix="sks-files-")
    os.chmod(base, 0o755)
    home = os.path.join(base, "home")
    subprocess.run(["groupadd", name], check=True, capture_output=True)
    try:
        subprocess.run(["useradd", "-d", home, "-m", "-g", name, "-s", "/usr/sbin/nologin", name], check=True,
                       capture_output=True)
        try:
            yield pwd.getpwnam(name), base
        finally:
            subprocess.run(["userdel", name], capture_output=True)
    finally:
        subprocess.run(["groupdel", name], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def as_user(user, *cmd, env):
    res = subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
                         + [str(c) for c in cmd], capture_output=True, timeout=120, env=env)
    return res.returncode, (res.stdout + res.stderr).decode(errors="replace")


@needs_root
def test_without_home_the_files_go_to_the_users_home_not_tmp(sks_binary, throwaway_user, tmp_path):
    """HOME unset: the user's files for a device that is not a store (here the issuer CA of
    `sks generate` through sksd) go below the home directory of the password database, never
    below /tmp where anyone could have prepared the directory."""
    user, base = throwaway_user
    db = tmp_path / "store.db"
    assert run_sks(sks_binary, "--store", db, "init")[0] == 0
    sock = os.path.join(base, "sksd.sock")
    sksd = os.path.join(os.path.dirname(os.path.dirname(str(sks_binary))), "sksd", "sksd")
    tmp_ca = "/tmp/.local/share/sks/device.issuer-ca.pem"
    tmp_existed = os.path.lexists("/tmp/.local")
    daemon = subprocess.Popen([sksd, "--foreground", "--store", str(db), "--socket", sock, "--mode", "0666",
                               "--allow-uid", str(user.pw_uid), "--admin-uid", str(user.pw_uid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15     # sksd's socket: a loaded machine may take seconds
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
        env = {"PATH": "/usr/bin:/bin"}       # no HOME, no XDG_DATA_HOME
        rc, out = as_user(user, sks_binary, "--device", "unix:" + sock, "generate", "--name", "k", "--algorithm",
                          "P-256", env=env)
        assert rc == 0, out
        assert os.path.exists(os.path.join(user.pw_dir, ".local/share/sks/device.issuer-ca.pem"))
        assert not os.path.exists(tmp_ca), "the issuer CA went to /tmp"
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        if not tmp_existed and os.path.lexists("/tmp/.local"):
            shutil.rmtree("/tmp/.local", ignore_errors=True)


@needs_root
def test_without_home_the_default_store_is_in_the_users_home(sks_binary, throwaway_user):
    user, _ = throwaway_user
    rc, out = as_user(user, sks_binary, "list", env={"PATH": "/usr/bin:/bin"})
    assert rc != 0
    assert os.path.join(user.pw_dir, ".local/share/sks/store.db") in out, out


@needs_root
def test_setgid_program_ignores_the_callers_store_and_master_key(sks_binary, throwaway_user, tmp_path):
    """The attack: a set-group-ID program using sks is run with SKS_STORE / SKS_DEVICE /
    SKS_MASTER_KEY naming files of the caller's choice. secure_getenv ignores them."""
    user, base = throwaway_user
    prog = os.path.join(base, "sks-setgid")
    shutil.copy(sks_binary, prog)
    os.chown(prog, 0, grp.getgrnam("nogroup").gr_gid)
    os.chmod(prog, 0o2755)
    evil_store = os.path.join(base, "evil-store.db")
    evil_key = os.path.join(base, "evil-master.key")
    for var, value in (("SKS_STORE", evil_store), ("SKS_DEVICE", "file:" + evil_store)):
        rc, out = as_user(user, prog, "list", env={"PATH": "/usr/bin:/bin", var: value})
        assert "evil" not in out, f"{var} was honoured by a set-group-ID program: {out}"
        assert os.path.join(user.pw_dir, ".local/share/sks/store.db") in out, out
    rc, out = as_user(user, prog, "--store", os.path.join(base, "store.db"), "list",
                      env={"PATH": "/usr/bin:/bin", "SKS_MASTER_KEY": evil_key})
    assert "evil" not in out, f"SKS_MASTER_KEY was honoured by a set-group-ID program: {out}"
    # the same variables work for an ordinary program
    rc, out = as_user(user, sks_binary, "list", env={"PATH": "/usr/bin:/bin", "SKS_STORE": evil_store})
    assert evil_store in out, out
