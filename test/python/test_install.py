"""What `cmake --install` puts where (DESTDIR and CMAKE_INSTALL_PREFIX honoured), and the man
pages: each one formats without a warning from man(1), and sks(1) and sksd(8) name every
option their programs' --help texts name."""

import os
import re
import shutil
import subprocess

import pytest

import provtools as pt

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAN = os.path.join(ROOT, "man")


def ossl_dir(flag):
    out = subprocess.run(["openssl", "version", flag], check=True, capture_output=True, text=True).stdout
    return re.search(r'"(.*)"', out).group(1)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    pt.require_build()
    dest = tmp_path_factory.mktemp("destdir")
    res = subprocess.run(["cmake", "--install", str(pt.BUILD), "--prefix", "/opt/sks-test"],
                         env=dict(os.environ, DESTDIR=str(dest)), capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    return dest


@pytest.mark.parametrize("path", [
    "opt/sks-test/bin/sks",
    "opt/sks-test/bin/sks-vcard",
    "opt/sks-test/sbin/sksd",
    "opt/sks-test/share/sks/sks-provider.cnf",
    "opt/sks-test/share/sks/sks-engine.cnf",
    "opt/sks-test/share/sks/sks-system.cnf",
    "opt/sks-test/lib/systemd/system/sksd.service",
    "opt/sks-test/lib/sysusers.d/sks.conf",
    "opt/sks-test/lib/tmpfiles.d/sksd.conf",
    "opt/sks-test/share/man/man1/sks.1",
    "opt/sks-test/share/man/man1/sks-vcard.1",
    "opt/sks-test/share/man/man7/sks-provider.7",
    "opt/sks-test/share/man/man8/sksd.8",
    "opt/sks-test/sbin/sks-issuer",
    "opt/sks-test/share/man/man8/sks-issuer.8",
])
def test_install_puts_file_under_prefix(installed, path):
    assert (installed / path).is_file(), f"{path} is not installed"


def test_provider_and_engine_go_to_openssls_directories(installed):
    for d in (ossl_dir("-m"), ossl_dir("-e")):
        assert (installed / d.lstrip("/") / "sks.so").is_file(), f"sks.so is not installed in {d}"


def test_installed_unit_starts_the_installed_sksd(installed):
    unit = (installed / "opt/sks-test/lib/systemd/system/sksd.service").read_text()
    assert re.search(r"^ExecStart=/opt/sks-test/sbin/sksd ", unit, re.M), unit


@pytest.mark.parametrize("page", ["sks.1", "sks-vcard.1", "sksd.8", "sks-provider.7", "sks-issuer.8"])
def test_man_page_formats_without_warnings(page):
    if shutil.which("man") is None:
        pytest.fail("man is not installed (scripts/install-deps.sh installs man-db)")
    res = subprocess.run(["man", "--warnings", "-l", os.path.join(MAN, page)],
                         env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8"), capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert "NAME" in res.stdout and "SEE ALSO" in res.stdout


def options_in(text):
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


def help_text(args):
    res = subprocess.run(args + ["--help"], capture_output=True, text=True)
    return res.stdout + res.stderr


def man_text(page):
    # roff writes "-" as "\-": read the page as a user types the options.
    text = open(os.path.join(MAN, page)).read()
    return re.sub(r"\\f[BIRP]", "", text).replace("\\-", "-")


# init and info take no options of their own.
SKS_COMMANDS = [[], ["serve"], ["list"], ["generate"], ["import"], ["export"],
                ["cert"], ["delete"], ["pin"], ["skip"], ["skip", "request"], ["skip", "import"],
                ["skip", "issue"], ["skip", "enroll"], ["skip", "recover"], ["hsm"], ["hsm", "wrap"],
                ["hsm", "dkek"], ["hsm", "backup"], ["hsm", "attest"], ["hsm", "domain"], ["hsm", "xkek"]]


@pytest.mark.parametrize("cmd", SKS_COMMANDS, ids=lambda c: " ".join(c) or "sks")
def test_sks_man_page_names_every_option(cmd):
    pt.require_build()
    opts = options_in(help_text([str(pt.SKS)] + cmd)) - {"--help"}
    assert opts, f"sks {' '.join(cmd)} --help names no option"
    missing = sorted(o for o in opts if o not in options_in(man_text("sks.1")))
    assert not missing, f"sks(1) does not document {missing} of sks {' '.join(cmd)}"


@pytest.mark.parametrize("program,page", [("sksd/sksd", "sksd.8"), ("sks-vcard/sks-vcard", "sks-vcard.1"),
                                          ("sks-issuer/sks-issuer", "sks-issuer.8")])
def test_daemon_man_page_names_every_option(program, page):
    pt.require_build()
    opts = options_in(help_text([str(pt.BUILD / "tools" / program)])) - {"--help"}
    assert len(opts) > 4
    missing = sorted(o for o in opts if o not in options_in(man_text(page)))
    assert not missing, f"{page} does not document {missing}"
