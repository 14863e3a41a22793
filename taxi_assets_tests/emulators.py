"""Local GCS and BigQuery emulators, started as subprocesses on free 127.0.0.1 ports.

gcp-storage-emulator (GCS) keeps objects on disk under `{dir}/.cloudstorage/{bucket}/{object}`;
bqemulator (BigQuery, DuckDB-backed) reads `gs://` load URIs from that same folder
(BQEMU_GCS_LOCAL_ROOT), so a load job really reads the published Parquet object.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from taxi_assets_harness.ports import free_port

BIN = Path(sys.executable).parent

# bqemulator insists on DuckDB's spatial extension, which it downloads at start: impossible
# offline. GEOGRAPHY is the only thing lost by skipping it; this project has none.
_OFFLINE_BQEMULATOR = """
import sys
import bqemulator.storage.engine as engine
engine.DuckDBEngine._load_spatial = lambda self: None
from bqemulator.cli import main
sys.exit(main())
"""


def _wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"emulator exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # answering, if only with an error status
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"emulator at {url} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def _running(cmd: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[None]:
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_http(ready_url, process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Emulators:
    storage_host: str  # STORAGE_EMULATOR_HOST
    bigquery_host: str  # BIGQUERY_EMULATOR_HOST
    gcs_root: Path  # objects on disk
    project: str


@contextlib.contextmanager
def gcp_emulators(workdir: Path, project: str = "taxi-test") -> Iterator[Emulators]:
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home)}
    gcs_port, bq_port, bq_grpc_port = free_port(), free_port(), free_port()
    gcs_dir = workdir / "gcs"
    gcs_cmd = [
        str(BIN / "gcp-storage-emulator"),
        "-d",
        str(gcs_dir),
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(gcs_port),
    ]
    gcs_url = f"http://127.0.0.1:{gcs_port}"
    bq_env = {
        **env,
        "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",
        "BQEMU_GCS_LOCAL_ROOT": str(gcs_dir / ".cloudstorage"),
    }
    bq_cmd = [
        sys.executable,
        "-c",
        _OFFLINE_BQEMULATOR,
        "start",
        "--rest-host",
        "127.0.0.1",
        "--rest-port",
        str(bq_port),
        "--grpc-host",
        "127.0.0.1",
        "--grpc-port",
        str(bq_grpc_port),
        "--project",
        project,
        "--log-level",
        "warning",
    ]
    bq_url = f"http://127.0.0.1:{bq_port}"
    # What bqemulator does not take and real BigQuery does, made right by a proxy in front of it
    # (the clients talk to the proxy), so that production code has no emulator-only path:
    # - the second part of a multipart upload (a small file load, as `BigQueryWarehouse.replace_table`
    #   makes for `zones`) with Content-Type '*/*': the proxy names the type;
    # - query parameters in a multi-statement script ("Values were not provided for the following
    #   parameters"; BigQuery documents named parameters there): the proxy writes them into the
    #   script as literals. Tests check what production sends on a proxy of their own in front.
    fix_multipart = RewritingProxy(bq_url, _emulator_fixes)
    with (
        _running(gcs_cmd, env, gcs_url, workdir / "gcs.log"),
        _running(bq_cmd, bq_env, f"{bq_url}/bigquery/v2/projects/{project}/datasets", workdir / "bq.log"),
        fix_multipart.running() as bq_proxy_url,
    ):
        yield Emulators(
            storage_host=gcs_url, bigquery_host=bq_proxy_url, gcs_root=gcs_dir / ".cloudstorage", project=project
        )


def _emulator_fixes(body: bytes) -> bytes:
    body = body.replace(b"content-type: */*\r\n", b"content-type: application/octet-stream\r\n", 1)
    return inline_script_parameters(body)


def _literal(kind: str, value: str) -> str:
    """A query parameter's value (as the REST API carries it: a string) as a GoogleSQL literal."""
    if kind == "STRING":
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
    if kind in ("INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC"):
        return value
    if kind == "BOOL":
        return "TRUE" if value.lower() == "true" else "FALSE"
    return f"{kind} '{value}'"  # DATE, DATETIME, TIMESTAMP


def inline_script_parameters(body: bytes) -> bytes:
    """A jobs.insert body whose query is a multi-statement script with named query parameters,
    rewritten with the parameters as literals and none left; any other body unchanged."""
    import json
    import re

    try:
        job = json.loads(body)
        query = job["configuration"]["query"]
    except (ValueError, KeyError, TypeError):
        return body
    params = query.get("queryParameters") or []
    if not params or not re.search(r";\s*\S", query.get("query", "")):
        return body
    values = {
        p["name"]: _literal(p["parameterType"]["type"], p["parameterValue"]["value"])
        for p in params
        if "value" in p.get("parameterValue", {})
    }
    query["query"] = re.sub(r"@(\w+)", lambda m: values.get(m.group(1), m.group(0)), query["query"])
    del query["queryParameters"]
    query.pop("parameterMode", None)
    return json.dumps(job).encode()


def service_account_key(email: str, token_uri: str, project: str = "taxi-test") -> str:
    """A service-account JSON key with a fresh RSA private key (valid for nothing) whose tokens
    come from `token_uri`."""
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return json.dumps(
        {
            "type": "service_account",
            "project_id": project,
            "private_key_id": "test",
            "private_key": key.decode(),
            "client_email": email,
            "client_id": "1",
            "token_uri": token_uri,
        }
    )


@contextlib.contextmanager
def oauth_token_endpoint(workdir: Path) -> Iterator[Path]:
    """Application Default Credentials that work offline: a service-account key (a fresh RSA key,
    valid for nothing) whose token endpoint is a loopback server handing out a dummy access token.
    Used two ways: given as GCP_CREDENTIALS, the project's clients get their tokens from it; set as
    GOOGLE_APPLICATION_CREDENTIALS, it serves the tests' own clients built without credentials. The
    emulators ignore the token. Yields the file."""
    import http.server
    import json
    import threading

    class Token(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"access_token": "emulator-token", "token_type": "Bearer", "expires_in": 3600}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Token)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    credentials = workdir / "adc.json"
    credentials.write_text(
        service_account_key(
            "emulator@taxi-test.iam.gserviceaccount.com", f"http://127.0.0.1:{server.server_address[1]}/token"
        )
    )
    try:
        yield credentials
    finally:
        server.shutdown()
        server.server_close()


class RewritingProxy:
    """A loopback HTTP proxy in front of an emulator that rewrites request bodies on cue: the way
    to make the real BigQuery client meet a server-side failure in the middle of a script.

    `rewrite(body) -> body` sees every request body; `rewritten` counts the bodies it changed.
    `answer(method, path, body) -> (status, payload) | None`, when given, may answer a request
    itself (a JSON payload, as Google's servers send errors) instead of forwarding it; `reply(method,
    path, body, status, payload) -> (status, payload) | None`, when given, may replace the answer
    to a forwarded request (a response lost after the server acted: the request took effect).
    `requests` lists every request as "METHOD /path" (no query string), answered or forwarded, in
    order; `received` the same as (method, path with query string, body as the client sent it).
    """

    def __init__(self, target: str, rewrite=lambda body: body, answer=None, reply=None):
        self.target = target.rstrip("/")
        self.rewrite = rewrite
        self.answer = answer
        self.reply = reply
        self.rewritten = 0
        self.requests: list[str] = []
        self.received: list[tuple[str, str, bytes | None]] = []
        self.url = ""

    def count(self, method: str, path_end: str) -> int:
        """Requests with this method whose path ends with `path_end`."""
        return sum(1 for r in self.requests if r.startswith(method + " ") and r.endswith(path_end))

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        import http.server
        import json
        import threading

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.requests.append(f"{self.command} {self.path.split('?')[0]}")
                proxy.received.append((self.command, self.path, body))
                answered = proxy.answer(self.command, self.path, body) if proxy.answer else None
                if answered is not None:
                    self._send_json(*answered)
                    return
                sent = body
                if body is not None:
                    changed = proxy.rewrite(body)
                    proxy.rewritten += changed != body
                    body = changed
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(
                    proxy.target + self.path, data=body, headers=headers, method=self.command
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        status, reply_headers, payload = response.status, response.headers, response.read()
                except urllib.error.HTTPError as error:
                    status, reply_headers, payload = error.code, error.headers, error.read()
                replaced = proxy.reply(self.command, self.path, sent, status, payload) if proxy.reply else None
                if replaced is not None:
                    self._send_json(*replaced)
                    return
                self.send_response(status)
                for key, value in reply_headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _send_json(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            self.url = f"http://127.0.0.1:{server.server_address[1]}"
            yield self.url
        finally:
            server.shutdown()
            server.server_close()


def google_error(code: int, status: str, reason: str, message: str, **extra) -> dict:
    """An error payload as Google's JSON APIs send it (BigQuery's and GCS's error formats)."""
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason, **extra}],
            "status": status,
        }
    }
