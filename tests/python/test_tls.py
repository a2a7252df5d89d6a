"""TLS on every listener (HTTP, gRPC, metrics) and certificate reload on SIGHUP: new
connections get the new certificate, open connections carry on, a broken file keeps the
certificate in use. Certificates are made with the openssl command line."""

import http.client
import pathlib
import signal
import socket
import ssl
import subprocess
import time

import pytest
import requests
import tritonclient.grpc as grpcclient
import urllib3

from conftest import start_server

pytestmark = pytest.mark.engine_only(
    "a gateway in front would need the engine's CA; its listeners are the same code")

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def make_cert(directory: pathlib.Path, stem: str, name: str):
    """A self-signed certificate for localhost and 127.0.0.1 (its own CA); returns
    (certificate path, key path)."""
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


def der(cert_path: pathlib.Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert_path.read_text())


def presented(address: str, alpn=("h2", "http/1.1")) -> bytes:
    """The certificate a new TLS connection to `address` is shown."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(list(alpn))
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def wait_for_certificate(addresses, expected: bytes, timeout=10):
    deadline = time.time() + timeout
    while True:
        seen = [presented(a) for a in addresses]
        if all(s == expected for s in seen):
            return
        assert time.time() < deadline, "the new certificate was not served on every door"
        time.sleep(0.2)


@pytest.fixture
def tls_server(tmp_path):
    first = make_cert(tmp_path, "first", "nereid-first")
    live_cert, live_key = tmp_path / "server.pem", tmp_path / "server.key"
    live_cert.write_bytes(first[0].read_bytes())
    live_key.write_bytes(first[1].read_bytes())
    srv = start_server([
        "--demo-models", "builtin",
        "--http-use-ssl", "--http-server-cert", str(live_cert), "--http-server-key", str(live_key),
        "--grpc-use-ssl", "--grpc-server-cert", str(live_cert), "--grpc-server-key", str(live_key),
        "--metrics-use-ssl",
    ])
    yield srv, tmp_path, first, (live_cert, live_key)
    srv.stop()


def test_every_listener_serves_tls_and_reloads_on_sighup_without_dropping_connections(tls_server):
    srv, directory, first, (live_cert, live_key) = tls_server
    doors = [srv.http, srv.grpc, srv.metrics]
    for door in doors:
        assert presented(door) == der(first[0]), door

    # The metrics port answers Prometheus over HTTPS, and nothing in cleartext.
    scraped = requests.get(f"https://{srv.metrics}/metrics", verify=str(first[0]), timeout=10)
    assert scraped.status_code == 200 and "nv_" in scraped.text
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{srv.metrics}/metrics", timeout=5)

    # Connections opened before the reload: an HTTPS keep-alive and a gRPC channel that
    # trusts only the first certificate (a reconnect after the reload would fail).
    host, port = srv.http.rsplit(":", 1)
    keep_alive = http.client.HTTPSConnection(
        host, int(port), timeout=10, context=ssl.create_default_context(cafile=str(first[0])))
    keep_alive.request("GET", "/v2/health/ready")
    assert keep_alive.getresponse().read() is not None
    opened = keep_alive.sock
    grpc = grpcclient.InferenceServerClient(srv.grpc, ssl=True,
                                            root_certificates=str(first[0]))
    assert grpc.is_server_ready()

    second = make_cert(directory, "second", "nereid-second")
    live_cert.write_bytes(second[0].read_bytes())
    live_key.write_bytes(second[1].read_bytes())
    srv.proc.send_signal(signal.SIGHUP)
    wait_for_certificate(doors, der(second[0]))

    # The open connections still carry requests (the same sockets: a new handshake would
    # have been refused by the clients, which trust only the first certificate).
    keep_alive.request("GET", "/v2/health/ready")
    response = keep_alive.getresponse()
    response.read()
    assert response.status == 200
    assert keep_alive.sock is opened, "the keep-alive connection was dropped"
    keep_alive.close()
    assert grpc.is_server_ready()
    assert grpc.get_model_metadata("simple").name == "simple"
    grpc.close()

    # A broken file: the reload fails, is logged, and the certificate in use stays.
    live_cert.write_text("not a certificate\n")
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while not any("TLS reload failed" in line for line in srv.log):
        assert time.time() < deadline, "".join(srv.log[-20:])
        time.sleep(0.1)
    assert srv.proc.poll() is None, "SIGHUP must not stop the server"
    for door in doors:
        assert presented(door) == der(second[0]), door
    fresh = requests.get(f"https://{srv.http}/v2/health/ready", verify=str(second[0]), timeout=10)
    assert fresh.status_code == 200


def test_metrics_tls_without_any_certificate_is_one_clear_error(tmp_path):
    from conftest import BIN
    result = subprocess.run(
        [BIN, "serve", "--demo-models", "builtin", "--http-port", "0", "--grpc-port", "0",
         "--metrics-port", "0", "--metrics-use-ssl"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "NEREID_READY" not in result.stdout
    assert "--metrics-server-cert" in result.stderr + result.stdout
