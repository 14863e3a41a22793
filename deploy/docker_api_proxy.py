"""A filtering proxy in front of the container engine's Docker API socket (deploy/compose.yaml).

Access to a Docker or podman API socket is root on its host: whoever can talk to it can start a
privileged container with `/` mounted. The compose deployment's daemon needs the API only to start,
watch and stop run containers (dagster-docker's DockerRunLauncher through docker-py), so it talks to
this proxy instead, the one service that mounts the socket. The proxy fails closed: it forwards
exactly the calls DockerRunLauncher and docker-py make, and answers everything else 403.

Allowed (after an optional /vX.Y prefix):
- GET, HEAD /_ping; GET /version (docker-py's API version negotiation);
- POST /containers/create, its JSON body checked key by key (`check_create`): the deployment's image,
  no `User`, the deployment's network, only the allowed named volumes, none of the keys that reach
  the host (Privileged, CapAdd, Devices, host namespaces, bind mounts, SecurityOpt, ...). The proxy
  then forces `CapDrop: ALL` and `no-new-privileges`, and labels the container a run container;
- GET /containers/{id}/json, POST /containers/{id}/start|stop|kill|wait, DELETE /containers/{id}:
  only for containers carrying that label, checked on the engine first, then applied to the
  container's full id (inspecting another container would show its environment: the database
  password);
- GET /containers/json: only run containers are listed;
- POST /images/create (a pull) and GET /images/{name}/json for the deployment's image only
  (docker-py pulls when the image is missing).
Refused: encoded or `..` paths, chunked or oversized bodies, upgrade (hijack) requests, every other
path and method (exec, attach, archive, update, commit, build, volume and network create, libpod's
API, ...). Each request is logged in one line, without bodies or query strings.

Settings (environment): TAXI_DOCKER_PROXY_IMAGE (required: the run image, TAXI_IMAGE in the compose
file), TAXI_DOCKER_PROXY_NETWORK (required: the run containers' network), TAXI_DOCKER_PROXY_VOLUMES
(comma-separated named volumes runs may mount), TAXI_DOCKER_PROXY_SOCKET (the engine's socket,
/var/run/docker.sock), TAXI_DOCKER_PROXY_LISTEN (host:port, 0.0.0.0:2375).

Standard library only: it runs from the project's image (`python3 -m docker_api_proxy`).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import logging
import os
import re
import signal
import socket
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger("docker_api_proxy")

RUN_LABEL = "taxi-assets.run-container"  # set by the proxy on every container it creates
# A run's create body carries the job origin and the instance ref (its command) and the GCP key
# (its environment): 1 MiB leaves room for that and still bounds what a request can hold.
MAX_BODY_BYTES = 1 << 20
# Engine calls that return at once (create, inspect, start); waits, stops and pulls get no bound.
UPSTREAM_TIMEOUT_SECONDS = 120

VERSION = re.compile(r"v\d{1,2}\.\d{1,3}")
CONTAINER_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
PATH_CHARS = re.compile(r"[A-Za-z0-9_.:/-]+")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
LABEL_KEY = re.compile(r"dagster/[A-Za-z0-9_.-]{1,64}")
SIGNAL = re.compile(r"(SIG)?[A-Z0-9+]{1,16}|\d{1,2}")

# POST /containers/create: every key a run's body may hold (docker-py's, for DockerRunLauncher's call).
CREATE_KEYS = {
    "Image",
    "Cmd",
    "Env",
    "Labels",
    "Volumes",
    "HostConfig",
    "NetworkingConfig",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "NetworkDisabled",
    "StopSignal",
    "StopTimeout",
}
BOOL_KEYS = {"Tty", "OpenStdin", "StdinOnce", "AttachStdin", "AttachStdout", "AttachStderr", "NetworkDisabled"}
# HostConfig: the network, the volumes, auto-removal and resource limits; nothing else.
HOST_CONFIG_KEYS = {
    "NetworkMode",
    "Binds",
    "Mounts",
    "AutoRemove",
    "CapDrop",
    "Memory",
    "MemorySwap",
    "NanoCpus",
    "CpuShares",
    "PidsLimit",
}
HOST_CONFIG_INTS = {"Memory", "MemorySwap", "NanoCpus", "CpuShares", "PidsLimit"}
# Query parameters per route; anything else is refused.
QUERY = {
    "ping": set(),
    "version": set(),
    "create": {"name"},
    "inspect": {"size"},
    "start": set(),
    "stop": {"t"},
    "kill": {"signal"},
    "wait": {"condition"},
    "remove": {"v", "force", "link"},
    "list": {"all", "limit", "filters", "size", "trunc_cmd"},
    "pull": {"fromImage", "tag"},
    "image": set(),
}
NO_TIMEOUT = {"wait", "stop", "pull"}


class Refused(Exception):
    """A request the proxy does not forward: answered 403 with this message."""


@dataclass(frozen=True)
class Policy:
    """What the proxy lets through: run containers of this one image, on this network, with these named volumes."""

    image: str
    network: str
    volumes: frozenset[str]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Policy:
        """The policy from TAXI_DOCKER_PROXY_IMAGE, _NETWORK and _VOLUMES; a missing or bad one stops the proxy."""
        missing = [k for k in ("TAXI_DOCKER_PROXY_IMAGE", "TAXI_DOCKER_PROXY_NETWORK") if not environ.get(k)]
        if missing:
            raise SystemExit(f"docker_api_proxy: set {' and '.join(missing)} (see deploy/compose.yaml)")
        volumes = frozenset(v.strip() for v in environ.get("TAXI_DOCKER_PROXY_VOLUMES", "").split(",") if v.strip())
        bad = [v for v in volumes if not VOLUME_NAME.fullmatch(v)]
        if bad:
            raise SystemExit(f"docker_api_proxy: TAXI_DOCKER_PROXY_VOLUMES holds {bad}: named volumes only, no paths")
        return cls(environ["TAXI_DOCKER_PROXY_IMAGE"], environ["TAXI_DOCKER_PROXY_NETWORK"], volumes)

    def is_image(self, name: object) -> bool:
        """Whether `name` spells the allowed image (podman's localhost/ prefix and :latest allowed for)."""
        return isinstance(name, str) and canonical_image(name) == canonical_image(self.image)


def canonical_image(name: str) -> str:
    """One spelling for an image name: podman reports local images as localhost/NAME, and a name
    without a tag means :latest."""
    if name.startswith("localhost/"):
        name = name[len("localhost/") :]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        name += ":latest"
    return name


def absolute_path(value: object) -> bool:
    """Whether `value` is a plain absolute path: no `.` or `..` parts, no `:`, ordinary characters only."""
    return (
        isinstance(value, str)
        and value.startswith("/")
        and PATH_CHARS.fullmatch(value) is not None
        and ":" not in value
        and not any(part in (".", "..") for part in value.split("/"))
    )


def check_create(body: object, policy: Policy) -> dict:
    """The create body if every key is allowed, hardened (no capabilities, no new privileges, the run
    label); Refused naming the first key that is not."""
    if not isinstance(body, dict):
        raise Refused("the body is not a JSON object")
    unknown = sorted(set(body) - CREATE_KEYS)
    if unknown:
        raise Refused(f"{unknown[0]} is not allowed")
    if not policy.is_image(body.get("Image")):
        raise Refused(f"Image {str(body.get('Image'))[:200]!r} is not the deployment's image ({policy.image})")
    for key in BOOL_KEYS & set(body):
        if not isinstance(body[key], bool):
            raise Refused(f"{key} must be true or false")
    cmd = body.get("Cmd")
    if cmd is not None and not (isinstance(cmd, list) and all(isinstance(c, str) for c in cmd)):
        raise Refused("Cmd must be a list of strings")
    env = body.get("Env")
    if env is not None and not (isinstance(env, list) and all(isinstance(e, str) and "=" in e for e in env)):
        raise Refused("Env must be a list of NAME=value strings")
    if "StopSignal" in body and not (isinstance(body["StopSignal"], str) and SIGNAL.fullmatch(body["StopSignal"])):
        raise Refused("StopSignal is not a signal name")
    if "StopTimeout" in body and not (isinstance(body["StopTimeout"], int) and 0 <= body["StopTimeout"] <= 3600):
        raise Refused("StopTimeout must be 0..3600 seconds")

    labels = body.get("Labels") or {}
    if not isinstance(labels, dict):
        raise Refused("Labels must be an object")
    for key, value in labels.items():
        if key != RUN_LABEL and not LABEL_KEY.fullmatch(key):
            raise Refused(f"label {key[:100]!r} is not allowed (dagster/... only)")
        if not isinstance(value, str):
            raise Refused(f"label {key!r} must be a string")

    host = body.get("HostConfig")
    if not isinstance(host, dict):
        raise Refused("HostConfig is required (NetworkMode: the deployment's network)")
    unknown = sorted(set(host) - HOST_CONFIG_KEYS)
    if unknown:
        raise Refused(f"HostConfig.{unknown[0]} is not allowed")
    if host.get("NetworkMode") != policy.network:
        raise Refused(f"HostConfig.NetworkMode must be {policy.network!r}")
    for key in HOST_CONFIG_INTS & set(host):
        if not isinstance(host[key], int) or isinstance(host[key], bool) or host[key] < -1:
            raise Refused(f"HostConfig.{key} must be an integer")
    if "AutoRemove" in host and not isinstance(host["AutoRemove"], bool):
        raise Refused("HostConfig.AutoRemove must be true or false")
    if "CapDrop" in host and not (
        isinstance(host["CapDrop"], list) and all(isinstance(c, str) for c in host["CapDrop"])
    ):
        raise Refused("HostConfig.CapDrop must be a list of strings")

    targets = set()
    binds = host.get("Binds") or []
    if not isinstance(binds, list):
        raise Refused("HostConfig.Binds must be a list")
    for bind in binds:
        parts = bind.split(":") if isinstance(bind, str) else []
        if not 2 <= len(parts) <= 3 or parts[0] not in policy.volumes:
            raise Refused(f"HostConfig.Binds: {str(bind)[:200]!r} is not one of the volumes {sorted(policy.volumes)}")
        if not absolute_path(parts[1]) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise Refused(f"HostConfig.Binds: {bind[:200]!r} needs an absolute target and no option but ro or rw")
        targets.add(parts[1])
    mounts = host.get("Mounts") or []
    if not isinstance(mounts, list):
        raise Refused("HostConfig.Mounts must be a list")
    for mount in mounts:
        if not isinstance(mount, dict) or not set(mount) <= {"Type", "Source", "Target", "ReadOnly", "VolumeOptions"}:
            raise Refused("HostConfig.Mounts: only Type, Source, Target, ReadOnly and VolumeOptions.NoCopy")
        if mount.get("Type") != "volume" or mount.get("Source") not in policy.volumes:
            raise Refused(
                f"HostConfig.Mounts: type {str(mount.get('Type'))[:20]!r} source {str(mount.get('Source'))[:200]!r}: "
                f"only volumes {sorted(policy.volumes)}"
            )
        options = mount.get("VolumeOptions") or {}
        if not isinstance(options, dict) or not set(options) <= {"NoCopy"}:
            raise Refused("HostConfig.Mounts: VolumeOptions other than NoCopy (a driver's options) are not allowed")
        if not absolute_path(mount.get("Target")) or not isinstance(mount.get("ReadOnly", False), bool):
            raise Refused("HostConfig.Mounts: Target must be an absolute path, ReadOnly true or false")
        targets.add(mount["Target"])
    volumes = body.get("Volumes") or {}
    if not isinstance(volumes, dict) or any(k not in targets or v not in ({}, None) for k, v in volumes.items()):
        raise Refused("Volumes may only name the targets of the allowed volumes")

    networking = body.get("NetworkingConfig")
    if networking is not None:
        endpoints = networking.get("EndpointsConfig", networking) if isinstance(networking, dict) else None
        if (
            not isinstance(endpoints, dict)
            or (networking is not endpoints and len(networking) != 1)
            or set(endpoints) - {policy.network}
            or any(v not in (None, {}) for v in endpoints.values())
        ):
            raise Refused(f"NetworkingConfig may only name the network {policy.network!r}, with no settings")

    hardened = dict(body)
    hardened["Labels"] = {**labels, RUN_LABEL: "true"}
    hardened["HostConfig"] = {**host, "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"], "Privileged": False}
    return hardened


@dataclass
class Route:
    """What a request is for (an allowed API call), with the API version and the container or image it names."""

    name: str
    version: str  # "" or "/vX.Y", forwarded as given
    container: str | None = None
    image: str | None = None


def route(method: str, target: str) -> tuple[Route, list[tuple[str, str]]]:
    """The route of a request line's target and its query, or Refused."""
    if not target.startswith("/"):
        raise Refused("only origin-form request targets")
    path, _, query = target.partition("?")
    if not PATH_CHARS.fullmatch(path) or "//" in path:
        raise Refused("encoded or irregular path")
    parts = path.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        raise Refused("encoded or irregular path")
    version = ""
    if parts and VERSION.fullmatch(parts[0]):
        version = "/" + parts.pop(0)
    try:
        params = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise Refused("malformed query") from exc
    names = [k for k, _ in params]
    if len(names) != len(set(names)):
        raise Refused("a repeated query parameter")

    r: Route | None = None
    match method, parts:
        case (("GET" | "HEAD"), ["_ping"]):
            r = Route("ping", version)
        case "GET", ["version"]:
            r = Route("version", version)
        case "POST", ["containers", "create"]:
            r = Route("create", version)
        case "GET", ["containers", "json"]:
            r = Route("list", version)
        case "GET", ["containers", ref, "json"]:
            r = Route("inspect", version, container=ref)
        case "POST", ["containers", ref, ("start" | "stop" | "kill" | "wait") as action]:
            r = Route(action, version, container=ref)
        case "DELETE", ["containers", ref]:
            r = Route("remove", version, container=ref)
        case "POST", ["images", "create"]:
            r = Route("pull", version)
        case "GET", ["images", *name, "json"] if name:
            r = Route("image", version, image="/".join(name))
    if r is None:
        raise Refused(f"{method} {path} is not a call the run launcher makes")
    if r.container is not None and not CONTAINER_REF.fullmatch(r.container):
        raise Refused("not a container id or name")
    unknown = sorted(set(names) - QUERY[r.name])
    if unknown:
        raise Refused(f"query parameter {unknown[0][:50]!r} is not allowed here")
    return r, params


class UnixConnection(http.client.HTTPConnection):
    """An HTTP connection to the engine's API over its Unix socket."""

    def __init__(self, path: str, timeout: float | None):
        super().__init__("docker", timeout=timeout)
        self.socket_path = path

    def connect(self):
        """Connect to the socket, with the connection's timeout."""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te", "trailer"}


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves each request: routes it, checks it against the policy, forwards it or refuses it (403)."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a client may stall mid-request (or idle between requests) before it is dropped
    server_version = "taxi-docker-api-proxy"
    policy: Policy
    upstream: str

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        """Nothing: `handle_request` logs one line per request, without query strings."""
        pass  # one line per request from `handle_request` instead (the default logs query strings)

    def do_GET(self):
        """Every method goes through `handle_request`."""
        self.handle_request()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    # -- the request ------------------------------------------------------------------------------

    def handle_request(self):
        """Route, check and answer one request, and log one line for it; a refusal answers 403 with why."""
        # The target as sent: http.server turns a leading "//" into "/" in self.path.
        target = self.requestline.split(" ")[1] if self.requestline.count(" ") == 2 else ""
        path = "".join(c if c.isascii() and c.isprintable() else "?" for c in target.partition("?")[0][:300])
        self.replied = self.body_read = False  # one handler serves every request of a kept-alive connection
        try:
            r, params = route(self.command, target)
            self.refuse_framing(r.name == "create")
            body = self.read_body() if r.name == "create" else b""
            status = self.dispatch(r, params, body)
        except Refused as exc:
            log.warning("refused %s %s from %s: %s", self.command, path, self.client_address[0], exc)
            self.close_connection = True
            self.drain()
            self.reply_json(403, {"message": f"refused by the deployment's Docker API proxy: {exc}"})
            return
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            log.error("failed %s %s: the engine's socket: %s", self.command, path, repr(exc)[:300])
            self.close_connection = True
            if not self.replied:
                self.reply_json(502, {"message": f"the container engine did not answer: {exc}"})
            return
        log.info("allowed %s %s -> %s", self.command, path, status)

    def refuse_framing(self, body_allowed: bool) -> None:
        """Refuse chunked bodies, upgrades (attach, exec), and a body where none is allowed or over the limit."""
        if "Transfer-Encoding" in self.headers:
            raise Refused("chunked or encoded request bodies are not accepted: send Content-Length")
        if "Upgrade" in self.headers or "upgrade" in self.headers.get("Connection", "").lower():
            raise Refused("connection upgrades (attach, exec) are not allowed")
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit():
            raise Refused("a malformed Content-Length")
        if int(length) > (MAX_BODY_BYTES if body_allowed else 0):
            raise Refused(f"a body of {length} bytes ({'over the limit' if body_allowed else 'none allowed here'})")

    def read_body(self) -> bytes:
        """The request's body, exactly Content-Length bytes (Refused if it ends early)."""
        length = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(length)
        self.body_read = True
        if len(data) != length:
            raise Refused("the body ended early")
        return data

    def drain(self) -> None:
        """Read a refused request's body (when framed and small) before answering: closing a socket with
        unread data resets it, and the client could lose the 403 and its message."""
        length = self.headers.get("Content-Length", "0")
        if not self.body_read and "Transfer-Encoding" not in self.headers and length.isdigit():
            if int(length) <= MAX_BODY_BYTES:
                with contextlib.suppress(OSError):
                    self.rfile.read(int(length))

    # -- the routes -------------------------------------------------------------------------------

    def dispatch(self, r: Route, params: list[tuple[str, str]], body: bytes) -> int:
        """Answer an allowed route (a create request hardened first; the deployment's image only); its status."""
        query = dict(params)
        if r.name in ("ping", "version"):
            return self.forward(r, f"/{r.name if r.name == 'version' else '_ping'}", params)
        if r.name == "create":
            if "name" in query and not NAME.fullmatch(query["name"]):
                raise Refused("a container name of letters, digits, _ . - only")
            try:
                request = json.loads(body)
            except ValueError as exc:
                raise Refused("the body is not JSON") from exc
            hardened = json.dumps(check_create(request, self.policy)).encode()
            return self.forward(r, "/containers/create", params, hardened)
        if r.name == "list":
            return self.list_run_containers(r, query)
        if r.name == "pull":
            image = query.get("fromImage", "") + (":" + query["tag"] if query.get("tag") else "")
            if not self.policy.is_image(image):
                raise Refused(f"pulling {image[:200]!r}: only the deployment's image")
            return self.forward(r, "/images/create", params)
        if r.name == "image":
            if not self.policy.is_image(r.image):
                raise Refused(f"image {r.image[:200]!r}: only the deployment's image")
            return self.forward(r, f"/images/{r.image}/json", params)
        # A container's own calls: only on run containers, checked first, then done on its full id.
        status, headers, data = self.call(f"{r.version}/containers/{r.container}/json")
        if status != 200:
            return self.reply(status, headers, data)  # 404 stays 404: docker-py's NotFound, a run gone
        found = json.loads(data)
        if ((found.get("Config") or {}).get("Labels") or {}).get(RUN_LABEL) != "true":
            raise Refused(f"container {r.container[:80]} is not a run container")
        if r.name == "inspect":
            return self.reply(status, headers, data)
        if r.name == "kill" and "signal" in query and not SIGNAL.fullmatch(query["signal"]):
            raise Refused("not a signal")
        if r.name == "remove" and query.get("link", "False").lower() not in ("false", "0"):
            raise Refused("link removal is not allowed")
        if r.name == "stop" and "t" in query and not query["t"].isdigit():
            raise Refused("t must be a number of seconds")
        suffix = "" if r.name == "remove" else f"/{r.name}"
        return self.forward(r, f"/containers/{found['Id']}{suffix}", params)

    def list_run_containers(self, r: Route, query: dict[str, str]) -> int:
        """The engine's container list, filtered to the containers of runs (their label) only."""
        try:
            filters = json.loads(query.get("filters") or "{}")
        except ValueError as exc:
            raise Refused("filters is not JSON") from exc
        if not isinstance(filters, dict) or not isinstance(filters.get("label", []), list):
            raise Refused("filters must be an object of lists")
        filters["label"] = [*filters.get("label", []), f"{RUN_LABEL}=true"]
        params = [(k, v) for k, v in query.items() if k != "filters"] + [("filters", json.dumps(filters))]
        status, headers, data = self.call(f"{r.version}/containers/json?{urllib.parse.urlencode(params)}")
        if status == 200:  # and whatever the engine's filter does, only run containers go back
            listed = [c for c in json.loads(data) if (c.get("Labels") or {}).get(RUN_LABEL) == "true"]
            data = json.dumps(listed).encode()
        return self.reply(status, headers, data)

    # -- the engine -------------------------------------------------------------------------------

    def call(self, url: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """One GET to the engine, read whole: (status, headers, body)."""
        conn = UnixConnection(self.upstream, UPSTREAM_TIMEOUT_SECONDS)
        try:
            conn.request("GET", url, headers={"Host": "docker"})
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def forward(self, r: Route, path: str, params: list[tuple[str, str]], body: bytes | None = None) -> int:
        """The request, rebuilt from what was checked (path, query, body; no caller headers), to the
        engine; its answer streamed back."""
        url = r.version + path + ("?" + urllib.parse.urlencode(params) if params else "")
        conn = UnixConnection(self.upstream, None if r.name in NO_TIMEOUT else UPSTREAM_TIMEOUT_SECONDS)
        try:
            headers = {"Host": "docker"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            conn.request(self.command, url, body=body, headers=headers)
            response = conn.getresponse()
            self.replied = True
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            if self.command == "HEAD" or response.status in (204, 304):
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif response.length is not None:
                data = response.read()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:  # a stream (a pull's progress): passed on chunk by chunk
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while chunk := response.read1(65536):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            return response.status
        finally:
            conn.close()

    def reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> int:
        """Send a response with the given status, headers (hop-by-hop ones dropped) and body; its status."""
        self.replied = True
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        return status

    def reply_json(self, status: int, payload: dict) -> None:
        """Send a JSON response."""
        self.reply(status, [("Content-Type", "application/json")], json.dumps(payload).encode())


def serve(policy: Policy, upstream: str, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """A threading HTTP server on `host:port` applying `policy` to the engine socket at `upstream` (not started)."""
    handler = type("BoundHandler", (Handler,), {"policy": policy, "upstream": upstream})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main() -> None:
    """Run the proxy as its container does: the policy and addresses from the environment, until SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s docker-api-proxy %(levelname)s %(message)s")
    policy = Policy.from_env()
    upstream = os.environ.get("TAXI_DOCKER_PROXY_SOCKET", "/var/run/docker.sock")
    host, _, port = os.environ.get("TAXI_DOCKER_PROXY_LISTEN", "0.0.0.0:2375").rpartition(":")
    server = serve(policy, upstream, host or "0.0.0.0", int(port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 in its container: SIGTERM stops it
    log.info(
        "listening on %s:%s for %s: image %s, network %s, volumes %s",
        host,
        port,
        upstream,
        policy.image,
        policy.network,
        ",".join(sorted(policy.volumes)) or "none",
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
