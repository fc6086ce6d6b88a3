"""The sks ENGINE with programs that only speak ENGINE: nginx 1.22 (ssl_certificate_key and
proxy_ssl_certificate_key "engine:sks:sks:name=...") and curl 7.88 (--engine sks
--key-type ENG [--cert-type ENG]), plus the openssl command line's -engine.

nginx is started by the test on 127.0.0.1 (free ports), in the foreground, with an
OPENSSL_CONF generated from openssl.cnf.d (provider + engine, absolute paths, the store in
the provider section so that forked workers find it). The front server requires client
certificates issued by the store's issuer CA and answers with what it saw; /proxy goes to an
upstream server block that requires a client certificate too, which nginx presents with a
key in the store.

    /usr/bin/python3 -m pytest test/python/test_engine_nginx.py
"""

import os
import re
import shutil
import time

import pytest

import provtools as pt

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
CURL = shutil.which("curl")

KEYS = [
    ("web", "P-256", {"subject": "CN=localhost, O=sks tests"}),
    ("upstream", "RSA-2048", {"subject": "CN=localhost, O=sks upstream"}),
    ("client", "P-384", {"subject": "CN=curl client, O=sks tests"}),
    ("rsaclient", "RSA-2048", {"subject": "CN=curl rsa client, O=sks tests"}),
    ("proxyclient", "P-256", {"subject": "CN=nginx proxy client, O=sks tests"}),
    ("engkey", "P-256"),
]

# The http block after the common part (provtools.nginx_conf).
NGINX_HTTP = """\
    log_format tls '$ssl_client_verify|$ssl_client_s_dn|$ssl_protocol|$request_uri';

    server {{
        listen 127.0.0.1:{front} ssl;
        server_name localhost;
        ssl_certificate {web_cert};
        ssl_certificate_key engine:sks:sks:name=web;
        ssl_client_certificate {issuer};
        ssl_verify_client on;
        # nginx 1.22's default has no TLSv1.3.
        ssl_protocols TLSv1.2 TLSv1.3;
        access_log {dir}/front.log tls;
        location / {{
            return 200 "client dn: $ssl_client_s_dn\\nverify: $ssl_client_verify\\nprotocol: $ssl_protocol\\n";
        }}
        location /proxy {{
            proxy_pass https://127.0.0.1:{up}/;
            proxy_ssl_certificate {proxy_cert};
            proxy_ssl_certificate_key engine:sks:sks:name=proxyclient;
            proxy_ssl_trusted_certificate {issuer};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
        }}
    }}

    server {{
        listen 127.0.0.1:{up} ssl;
        server_name localhost;
        ssl_certificate {up_cert};
        ssl_certificate_key engine:sks:sks:name=upstream;
        ssl_client_certificate {issuer};
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        access_log {dir}/upstream.log tls;
        location / {{
            return 200 "upstream saw: $ssl_client_s_dn\\n";
        }}
    }}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return pt.make_store(tmp_path_factory, "engine", KEYS)


@pytest.fixture(scope="module")
def nginx(store):
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx-light)")
    d = store.dir / "nginx"
    d.mkdir()
    cnf = pt.write_openssl_conf(d / "openssl.cnf", store, provider=True, engine=True)
    front, up = pt.free_port(), pt.free_port()
    while up == front:
        up = pt.free_port()
    conf = d / "nginx.conf"
    conf.write_text(pt.nginx_conf(d, NGINX_HTTP.format(
        dir=d, front=front, up=up,
        web_cert=store.keys["web"].chain, up_cert=store.keys["upstream"].chain,
        proxy_cert=store.keys["proxyclient"].cert, issuer=store.issuer_ca)))
    # Only OPENSSL_CONF: the store, module and engine come from the configuration.
    env = pt.clean_env(OPENSSL_CONF=cnf)
    res = pt.run([NGINX, "-t", "-p", d, "-c", conf, "-e", d / "error.log"], env=env, check=False)
    if res.returncode != 0:
        pytest.fail(pt.describe(["nginx", "-t"], res) + "\n" + (d / "error.log").read_text(errors="replace"),
                    pytrace=False)
    daemon = pt.Daemon([NGINX, "-p", d, "-c", conf, "-e", d / "error.log"], env=env, log=d / "nginx.out")
    try:
        if not (pt.wait_port(front, daemon.proc) and pt.wait_port(up, daemon.proc)):
            pytest.fail(f"nginx did not start:\n{daemon.output()}\n"
                        f"{(d / 'error.log').read_text(errors='replace')[-4000:]}", pytrace=False)
        yield {"front": front, "up": up, "dir": d, "daemon": daemon}
    finally:
        daemon.stop()
        errors = (d / "error.log").read_text(errors="replace") if (d / "error.log").exists() else ""
        # Workers that crash (e.g. a provider that breaks after fork) show up here.
        assert "exited on signal" not in errors, errors[-4000:]


def curl(store, nginx, path="/", *args, check=True):
    """curl with -v; returns (body, verbose stderr, http code)."""
    if CURL is None:
        pytest.skip("curl is not installed")
    port = nginx["front"]
    res = pt.run([CURL, "-sS", "-v", "--max-time", "20", "--cacert", store.issuer_ca,
                  "--resolve", f"localhost:{port}:127.0.0.1", "-w", "\n%{http_code}", *args,
                  f"https://localhost:{port}{path}"], env=store.env(), check=check)
    out = res.stdout.decode(errors="replace")
    body, _, code = out.rpartition("\n")
    return body, res.stderr.decode(errors="replace"), code


def log_lines(nginx, name, expect=(), timeout=10):
    """The access log's lines, once every line in `expect` is there: nginx writes a request's
    log line after the response went out, so curl may be done before it is written."""
    p = nginx["dir"] / name
    deadline = time.monotonic() + timeout
    while True:
        lines = p.read_text().splitlines() if p.exists() else []
        if all(e in lines for e in expect) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def engine_key(key):
    return ["--engine", "sks", "--key-type", "ENG", "--key", key.uri()]


def check_server_seen_by_curl(verbose):
    assert re.search(r"subject: .*CN=localhost", verbose), verbose
    assert "SSL certificate verify ok" in verbose, verbose


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
@pytest.mark.parametrize("client", ["client", "rsaclient"])
def test_curl_key_in_store_cert_from_file(store, nginx, client, tls):
    key = store.keys[client]
    path = f"/file/{client}/{tls}"
    body, verbose, code = curl(store, nginx, path, *engine_key(key), "--cert", key.cert, f"--tlsv{tls}",
                               "--tls-max", tls)
    assert code == "200", body + verbose
    # nginx's view of the client ...
    assert f"client dn: {key.subject_rfc2253}\n" in body, body
    assert "verify: SUCCESS" in body
    assert f"protocol: TLSv{tls}" in body
    line = f"SUCCESS|{key.subject_rfc2253}|TLSv{tls}|{path}"
    assert line in log_lines(nginx, "front.log", [line])
    # ... and curl's view of nginx, whose key is in the store too.
    check_server_seen_by_curl(verbose)


def test_curl_key_and_cert_from_engine(store, nginx):
    """--cert-type ENG: the certificate comes from the store too (curl's LOAD_CERT_CTRL).
    curl splits --cert at ':' unless escaped."""
    key = store.keys["client"]
    body, verbose, code = curl(store, nginx, "/eng", *engine_key(key), "--cert-type", "ENG",
                               "--cert", key.uri().replace(":", "\\:", 1))
    assert code == "200", body + verbose
    assert f"client dn: {key.subject_rfc2253}\n" in body, body
    line = f"SUCCESS|{key.subject_rfc2253}|TLSv1.3|/eng"
    assert line in log_lines(nginx, "front.log", [line])
    check_server_seen_by_curl(verbose)


def test_request_without_client_certificate_is_refused(store, nginx):
    body, verbose, code = curl(store, nginx, "/anonymous")
    assert code == "400", body
    assert "No required SSL certificate was sent" in body
    assert not any(line.startswith("SUCCESS|") and line.endswith("|/anonymous")
                   for line in log_lines(nginx, "front.log"))


def test_client_certificate_from_another_ca_is_refused(store, nginx, tmp_path):
    soft_key, soft_cert = pt.soft_cert(tmp_path, "stranger")
    body, verbose, code = curl(store, nginx, "/stranger", "--key", soft_key, "--cert", soft_cert)
    assert code == "400", body
    assert "SSL certificate error" in body, body


def test_proxy_client_key_in_store(store, nginx):
    """nginx authenticates to an upstream that requires a client certificate with
    proxy_ssl_certificate_key engine:sks:sks:name=proxyclient."""
    proxy = store.keys["proxyclient"]
    client = store.keys["client"]
    body, verbose, code = curl(store, nginx, "/proxy", *engine_key(client), "--cert", client.cert)
    assert code == "200", body + verbose
    assert body == f"upstream saw: {proxy.subject_rfc2253}\n", body
    up_line = f"SUCCESS|{proxy.subject_rfc2253}|TLSv1.3|/"
    front_line = f"SUCCESS|{client.subject_rfc2253}|TLSv1.3|/proxy"
    assert up_line in log_lines(nginx, "upstream.log", [up_line])
    assert front_line in log_lines(nginx, "front.log", [front_line])


def test_many_requests_over_fresh_connections(store, nginx):
    """Several connections in a row (curl reloads the key each time; nginx workers sign
    after fork): all succeed."""
    key = store.keys["client"]
    if CURL is None:
        pytest.skip("curl is not installed")
    port = nginx["front"]
    urls = [f"https://localhost:{port}/many/{i}" for i in range(6)]
    res = pt.run([CURL, "-sS", "--max-time", "30", "--cacert", store.issuer_ca, "--resolve",
                  f"localhost:{port}:127.0.0.1", *engine_key(key), "--cert", key.cert, "--no-keepalive",
                  *[a for u in urls for a in ("-o", "/dev/null", "-w", "%{http_code}\n", u)]], env=store.env())
    assert res.stdout.decode().split() == ["200"] * len(urls), res.stdout
    want = [f"SUCCESS|{key.subject_rfc2253}|TLSv1.3|/many/{i}" for i in range(6)]
    lines = log_lines(nginx, "front.log", want)
    for line in want:
        assert line in lines


# ---------------------------------------------------------------------------------------------
# The openssl command line with -engine sks
# ---------------------------------------------------------------------------------------------

def test_openssl_engine_sign(store):
    key = store.keys["engkey"]
    h, sig = store.dir / "eng.h", store.dir / "eng.sig"
    h.write_bytes(bytes(range(32)))
    pt.run([pt.OPENSSL, "pkeyutl", "-engine", "sks", "-keyform", "engine", "-inkey", key.uri(), "-sign",
            "-in", h, "-out", sig], env=store.env())
    res = pt.plain_openssl("pkeyutl", "-verify", "-certin", "-inkey", key.cert, "-in", h, "-sigfile", sig)
    assert b"Signature Verified Successfully" in res.stdout


def test_openssl_engine_tls_server(store, tmp_path):
    """openssl s_server -engine sks -keyform engine: a TLS 1.3 handshake with a plain client."""
    key = store.keys["web"]
    res = pt.tls_handshake(
        tmp_path,
        server_args=["-engine", "sks", "-keyform", "engine", "-cert", key.cert, "-key", key.uri()],
        server_env=store.env(),
        client_args=["-CAfile", store.issuer_ca, "-verify_return_error"],
        client_env=pt.clean_env())
    assert "Verification: OK" in res.client and "Peer signature type: ECDSA" in res.client, res.explain()
    assert "CIPHER is TLS_" in res.server, res.explain()
