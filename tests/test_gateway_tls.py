"""``kling-budget serve --ssl-certfile/--ssl-keyfile``: a real serve process answering HTTPS with a test CA."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kling_budget.ledger import open_backend
from kling_budget.server.keys import KeyStore, load_master_key
from kling_budget.simulator import SimulatorConfig, running_simulator
from tests.jobfixtures import run_cli

T2V = "/v1/videos/text2video"
BODY = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a heron at dawn"}


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server-key.pem)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kling-budget test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem(key))
    return paths


def test_serve_answers_https_with_the_given_certificate(tmp_path: Path) -> None:
    """serve --ssl-certfile/--ssl-keyfile: an https client trusting the test CA creates a task; without the CA it
    is refused; the start-up log warns that --public-url is unset."""
    ca, cert, key = _certificates(tmp_path)
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    home = tmp_path / "home"
    backend = open_backend(db)
    issued = KeyStore(backend, load_master_key(home=home)).create("tls", project="p", kind="api")
    backend.close()
    env = {**os.environ, "KLING_ACCESS_KEY": "sim-access-key", "KLING_SECRET_KEY": "sim-secret-key"}
    env["KLING_BUDGET_HOME"] = str(home)
    argv = [sys.executable, "-m", "kling_budget", "--db", db, "serve", "--port", "0", "--settle-interval", "0"]
    with contextlib.ExitStack() as stack:
        kling = stack.enter_context(running_simulator(SimulatorConfig.single(concurrency=10)))
        log = stack.enter_context((tmp_path / "gateway.log").open("w"))
        argv += ["--upstream", kling.base_url, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        process = subprocess.Popen(
            [*argv, "--log-level", "warning"], stdout=subprocess.PIPE, stderr=log, text=True, env=env
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            url = line.split(" on ", 1)[1].split(" ", 1)[0]
            assert url.startswith("https://127.0.0.1:"), line
            headers = {"Authorization": f"Bearer {issued.api_key}"}
            trusted = ssl.create_default_context(cafile=str(ca))
            with httpx.Client(base_url=url, headers=headers, verify=trusted, timeout=30) as client:
                created = client.post(T2V, json=BODY)
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                httpx.get(url + "/healthz", timeout=10)
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
            assert process.stdout is not None
            process.stdout.close()
    assert created.status_code == 200 and created.json()["code"] == 0, created.text
    assert created.headers["X-Kling-Budget-Gateway"] == "1"
    assert "--public-url (KLING_BUDGET_PUBLIC_URL) is not set" in (tmp_path / "gateway.log").read_text()


def test_bad_tls_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing key, a key that does not match, or a file that is not PEM: exit 2 with one line, nothing served."""
    monkeypatch.setenv("KLING_API_KEY", "real-key-not-used")
    _, cert, key = _certificates(tmp_path)
    other = tmp_path / "other-key.pem"
    other.write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    serve = ["--db", f"sqlite:///{tmp_path / 'x.db'}", "serve", "--port", "0"]
    cases = [
        (["--ssl-certfile", str(cert)], "give both --ssl-certfile and --ssl-keyfile"),
        (["--ssl-certfile", str(cert), "--ssl-keyfile", str(other)], "cannot use --ssl-certfile"),
        (["--ssl-certfile", str(tmp_path / "x.db"), "--ssl-keyfile", str(key)], "does not exist"),
        (["--ssl-certfile", str(key), "--ssl-keyfile", str(key)], "expected a PEM certificate chain"),
    ]
    for options, expected in cases:
        result = run_cli(capsys, *serve, *options)
        code, err = result.code, result.err
        assert code == 2 and expected in err and err.strip().count("\n") == 0, (options, err)
