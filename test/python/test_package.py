"""The Debian packages, as a user gets them: scripts/package.sh builds sks-provider, sks and
sksd with debhelper; they are installed with dpkg -i, the main job runs with the installed
files only (no OPENSSL_MODULES, no build tree: `openssl -provider sks`, nginx with the engine
from the installed snippet, curl), lintian reports no errors, and dpkg --purge leaves the
machine as it was.

Needs root (dpkg). Refuses to touch a machine where sks is installed already (by dpkg or by a
`cmake --install` into the system): that installation would be replaced and then removed.
"""

import grp
import os
import re
import shutil
import subprocess

import pytest

import provtools as pt

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PACKAGES = ["sks-provider", "sks", "sksd", "sks-issuer"]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def sh(*args, check=True, env=None, input=None):
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, input=input, timeout=600)
    if check and res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}",
                    pytrace=False)
    return res


def ossl_dir(flag):
    return re.search(r'"(.*)"', sh("openssl", "version", flag).stdout).group(1)


def installed_packages():
    res = sh("dpkg-query", "-W", "-f", "${Package} ${Status}\n", *PACKAGES, check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if "installed" in line and "not-installed" not in line]


def group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("installing packages needs root")
    if installed_packages():
        pytest.skip(f"sks packages are installed already: {installed_packages()}; not replacing them")
    for d in (ossl_dir("-m"), ossl_dir("-e")):
        if os.path.exists(os.path.join(d, "sks.so")):
            pytest.skip(f"{d}/sks.so exists already (a cmake --install?); not replacing it")
    out = tmp_path_factory.mktemp("dist")
    sh(os.path.join(ROOT, "scripts", "package.sh"), out)
    files = {p: next(out.glob(f"{p}_*_*.deb")) for p in PACKAGES}
    return files


@pytest.fixture(scope="module")
def installed(debs):
    group_before = group_exists("sks")
    sh("dpkg", "-i", *debs.values())
    try:
        yield debs
    finally:
        sh("dpkg", "--purge", *PACKAGES, check=False)
    leftovers = installed_packages()
    assert not leftovers, f"still installed after purge: {leftovers}"
    assert group_exists("sks") == group_before, "the sks group was left behind (or removed though it existed)"


def test_lintian_reports_no_errors(debs):
    res = sh("lintian", *debs.values(), check=False)
    errors = [line for line in res.stdout.splitlines() if line.startswith("E:")]
    assert not errors, "\n".join(errors)


def test_packages_depend_on_the_libraries_they_use(debs):
    depends = sh("dpkg-deb", "-f", debs["sks-provider"], "Depends").stdout
    for lib in ("libssl3", "libsqlite3-0", "libtasn1-6", "libpcsclite1"):
        assert lib in depends, f"sks-provider does not depend on {lib}: {depends}"


def test_files_go_where_debian_and_openssl_look(installed):
    listed = set()
    for p in PACKAGES:
        listed |= set(sh("dpkg", "-L", p).stdout.split())
    for path in [os.path.join(ossl_dir("-m"), "sks.so"), os.path.join(ossl_dir("-e"), "sks.so"),
                 "/usr/bin/sks", "/usr/bin/sks-vcard", "/usr/sbin/sksd", "/usr/share/sks/sks-system.cnf",
                 "/usr/share/sks/sks-engine.cnf", "/lib/systemd/system/sksd.service",
                 "/usr/lib/sysusers.d/sks.conf", "/usr/lib/tmpfiles.d/sksd.conf",
                 "/usr/share/man/man1/sks.1.gz", "/usr/share/man/man7/sks-provider.7.gz",
                 "/usr/share/man/man8/sksd.8.gz"]:
        assert path in listed and os.path.exists(path), f"{path} is not installed by the packages"
    assert group_exists("sks"), "sksd's postinst did not create the sks group"
    unit = open("/lib/systemd/system/sksd.service").read()
    assert "ExecStart=/usr/sbin/sksd " in unit
    assert sh("man", "-w", "sks-provider").stdout.strip().endswith("sks-provider.7.gz")


def installed_env(tmp_path, **extra):
    """Nothing from the build tree: no OPENSSL_MODULES/ENGINES, no SKS_* but the store."""
    return pt.clean_env(SKS_STORE=tmp_path / "store.db", **extra)


def test_openssl_signs_with_the_installed_provider(installed, tmp_path):
    env = installed_env(tmp_path)
    sh("/usr/bin/sks", "init", env=env)
    sh("/usr/bin/sks", "generate", "--name", "web", "--algorithm", "P-256", "--subject", "CN=localhost", env=env)
    msg = tmp_path / "msg"
    msg.write_bytes(b"the main job, installed\n")
    sh("openssl", "pkeyutl", "-provider", "default", "-provider", "sks", "-sign", "-inkey", "sks:name=web",
       "-rawin", "-digest", "sha256", "-in", msg, "-out", tmp_path / "sig", env=env)
    cert = sh("/usr/bin/sks", "cert", "--name", "web", env=env).stdout
    (tmp_path / "web.pem").write_text(cert)
    sh("openssl", "x509", "-in", tmp_path / "web.pem", "-pubkey", "-noout", "-out", tmp_path / "web.pub")
    # The default provider alone verifies.
    res = sh("openssl", "pkeyutl", "-verify", "-pubin", "-inkey", tmp_path / "web.pub", "-rawin", "-digest", "sha256",
             "-in", msg, "-sigfile", tmp_path / "sig", env=pt.clean_env())
    assert "Signature Verified Successfully" in res.stdout


def test_system_wide_include_enables_the_provider(installed, tmp_path):
    """The one line README and sks-provider(7) give: .include /usr/share/sks/sks-system.cnf at
    the end of Debian's openssl.cnf (here a copy, so the system file stays as it is)."""
    cnf = tmp_path / "openssl.cnf"
    cnf.write_text(open("/etc/ssl/openssl.cnf").read() + "\n.include /usr/share/sks/sks-system.cnf\n")
    res = sh("openssl", "list", "-providers", env=installed_env(tmp_path, OPENSSL_CONF=cnf))
    assert re.search(r"^\s+sks\n\s+name: sks", res.stdout, re.M) and "default" in res.stdout, res.stdout


# The http block after the common part (provtools.nginx_conf).
NGINX_HTTP = """\
    access_log off;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key engine:sks:sks:name=web;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{ return 200 "served with a key from the store\\n"; }}
    }}
"""


def test_nginx_serves_with_the_installed_engine(installed, tmp_path):
    env = installed_env(tmp_path, OPENSSL_CONF="/usr/share/sks/sks-engine.cnf")
    if not os.path.exists(tmp_path / "store.db"):
        sh("/usr/bin/sks", "init", env=env)
        sh("/usr/bin/sks", "generate", "--name", "web", "--algorithm", "P-256", "--subject", "CN=localhost", env=env)
    (tmp_path / "chain.pem").write_text(sh("/usr/bin/sks", "cert", "--name", "web", "--chain", env=env).stdout)
    port = pt.free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(pt.nginx_conf(tmp_path, NGINX_HTTP.format(port=port, cert=tmp_path / "chain.pem"),
                                  worker_connections=16, env=["SKS_STORE"], user_root=True))
    daemon = pt.Daemon([NGINX, "-p", tmp_path, "-c", conf, "-e", tmp_path / "error.log"], env=env,
                       log=tmp_path / "nginx.out")
    try:
        assert pt.wait_port(port, daemon.proc), daemon.output() + (tmp_path / "error.log").read_text(errors="replace")
        ca = tmp_path / "store.db.issuer-ca.pem"
        res = sh("curl", "-sS", "--cacert", ca, "--resolve", f"localhost:{port}:127.0.0.1",
                 f"https://localhost:{port}/", env=pt.clean_env())
        assert res.stdout == "served with a key from the store\n"
    finally:
        daemon.stop()


def test_installed_sks_issuer_answers_help(installed):
    res = sh("/usr/sbin/sks-issuer", "--help")
    assert "add-token" in res.stdout and "--config" in res.stdout
