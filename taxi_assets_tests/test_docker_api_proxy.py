"""The compose deployment's Docker API proxy (deploy/docker_api_proxy.py): nothing the daemon can reach
leads to root on the host.

On podman: its Docker API on a private socket (root's, 0600), the proxy started from the project's
image as compose.yaml's `docker-api` service is (its user, capabilities, security options, read-only
root and command read from compose.yaml; the socket mounted; an internal network), and the daemon's
stand-in: a container of the same image as uid 10001 with its own groups on that internal network,
talking to the proxy (fixtures/docker_api_attacks.py). It launches, health-checks and terminates run
containers with docker-py's calls as DockerRunLauncher makes them, then tries every way out; the test
checks each is refused, that whatever was created could not read the host's /etc/shadow or write its
/tmp, and what a run container could do. Without containers, in `make test`: compose.yaml's layout,
the create-body and path rules, and the proxy over HTTP in front of a loopback stand-in for the engine
that records what reaches it.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from taxi_assets_harness.graphql import wait_until
from taxi_assets_tests.containers import (
    BASE_IMAGE,
    NO_PODMAN,
    ROOT,
    UID,
    build_image,
    podman,
    podman_api_socket,
)

sys.path.insert(0, str(ROOT / "deploy"))
import docker_api_proxy  # noqa: E402 - deploy/ is on PYTHONPATH in the image, not in the package

IMAGE = "localhost/taxi-assets:proxy-test"  # a tag of this test's own: other tests build theirs in parallel
PREFIX = "taxi-proxy-test"
RUN_NETWORK, API_NETWORK, VOLUME = f"{PREFIX}-runs", f"{PREFIX}-api", f"{PREFIX}-data"
PROXY, OTHER, DAEMON = f"{PREFIX}-proxy", f"{PREFIX}-other", f"{PREFIX}-daemon"
COMPOSE = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
ATTACKS = ROOT / "taxi_assets_tests" / "fixtures" / "docker_api_attacks.py"

# What a run container of the project's image can do, written to the volume for the test to read.
PROBE = """
import json, os, socket
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
out = {"uid": os.getuid(), "groups": os.getgroups(), "CapEff": status["CapEff"].strip(),
       "CapBnd": status["CapBnd"].strip(), "NoNewPrivs": status["NoNewPrivs"].strip()}
def can(f):
    try:
        f()
        return True
    except OSError:
        return False
out["reads /etc/shadow"] = can(lambda: open("/etc/shadow").read())
out["writes the volume"] = can(lambda: open("/data/probe-wrote", "w").write("x"))
out["writes /etc"] = can(lambda: open("/etc/probe-wrote", "w").write("x"))
out["writes /opt/venv"] = can(lambda: open("/opt/venv/probe-wrote", "w").write("x"))
out["reaches the proxy"] = can(lambda: socket.create_connection((os.environ["PROXY_IP"], 2375), 5).close())
json.dump(out, open("/data/probe.json", "w"))
"""


def service(name: str) -> dict:
    return COMPOSE["services"][name]


# -- compose.yaml's layout (no containers) ------------------------------------------------------------


def test_only_the_proxy_mounts_the_engine_socket_and_only_the_daemon_reaches_it():
    for name, svc in COMPOSE["services"].items():
        mounts = [str(v) for v in svc.get("volumes", [])]
        assert "group_add" not in svc, name
        assert any("DOCKER_SOCKET" in m for m in mounts) == (name == "docker-api"), (name, mounts)
    proxy, daemon = service("docker-api"), service("daemon")
    assert proxy["networks"] == ["docker-api"]
    assert COMPOSE["networks"]["docker-api"]["internal"] is True
    assert set(daemon["networks"]) == {"default", "docker-api"}
    assert daemon["environment"]["DOCKER_HOST"] == "tcp://docker-api:2375"
    assert [n for n, s in COMPOSE["services"].items() if "docker-api" in s.get("networks", [])] == [
        "docker-api",
        "daemon",
    ]
    assert proxy["cap_drop"] == ["ALL"] and proxy["read_only"] is True
    # The proxy's allowed network and volume are the ones DockerRunLauncher is configured with.
    launcher = yaml.safe_load((ROOT / "deploy" / "dagster.compose.yaml").read_text())["run_launcher"]["config"]
    assert (
        proxy["environment"]["TAXI_DOCKER_PROXY_NETWORK"]
        == launcher["network"]
        == COMPOSE["networks"]["default"]["name"]
    )
    volumes = {v.split(":")[0] for v in launcher["container_kwargs"]["volumes"]}
    assert set(proxy["environment"]["TAXI_DOCKER_PROXY_VOLUMES"].split(",")) == volumes


# -- the create-body rules (no containers) -----------------------------------------------------------

POLICY = docker_api_proxy.Policy("taxi-assets:latest", "taxi-assets", frozenset({"taxi-assets-data"}))


def launcher_body(**host) -> dict:
    """The body docker-py builds for DockerRunLauncher's create with deploy/dagster.compose.yaml."""
    return {
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "Env": ["DAGSTER_PG_PASSWORD=x", "DAGSTER_RUN_JOB_NAME=j"],
        "Cmd": ["dagster", "api", "execute_run", "{}"],
        "Image": "taxi-assets:latest",
        "Volumes": {"/data": {}},
        "NetworkDisabled": False,
        "HostConfig": {"NetworkMode": "taxi-assets", "Binds": ["taxi-assets-data:/data"], "AutoRemove": True, **host},
        "NetworkingConfig": {"taxi-assets": None},
        "Labels": {"dagster/run_id": "r", "dagster/job_name": "j"},
    }


def test_the_launchers_body_passes_hardened():
    for image in ("taxi-assets:latest", "taxi-assets", "localhost/taxi-assets:latest"):
        out = docker_api_proxy.check_create({**launcher_body(), "Image": image}, POLICY)
        assert out["HostConfig"]["CapDrop"] == ["ALL"]
        assert out["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]
        assert out["HostConfig"]["Privileged"] is False
        assert out["Labels"][docker_api_proxy.RUN_LABEL] == "true"
        assert out["Env"] == launcher_body()["Env"]


@pytest.mark.parametrize(
    "change",
    [
        {"User": "0"},
        {"Image": "taxi-assets:other"},
        {"Image": "docker.io/library/debian:12"},
        {"Entrypoint": ["sh"]},
        {"HostConfig": {"NetworkMode": "host"}},
        {"NetworkingConfig": {"EndpointsConfig": {"podman": {}}}},
        {"NetworkingConfig": {"taxi-assets": {"IPAMConfig": {"IPv4Address": "10.0.0.9"}}}},
        {"Labels": {"io.containers.capabilities": "SYS_ADMIN"}},
        {"Volumes": {"/host": {}}},
    ]
    + [
        {"host": {key: value}}
        for key, value in [
            ("Privileged", True),
            ("CapAdd", ["SYS_ADMIN"]),
            ("SecurityOpt", ["seccomp=unconfined"]),
            ("Devices", [{"PathOnHost": "/dev/mem"}]),
            ("DeviceRequests", [{"Count": -1}]),
            ("PidMode", "host"),
            ("IpcMode", "host"),
            ("UTSMode", "host"),
            ("UsernsMode", "host"),
            ("CgroupnsMode", "host"),
            ("VolumesFrom", ["x"]),
            ("Sysctls", {"kernel.x": "1"}),
            ("CgroupParent", "/"),
            ("PortBindings", {"22/tcp": [{"HostPort": "22"}]}),
            ("LogConfig", {"Type": "json-file", "Config": {"path": "/etc/x"}}),
            ("NetworkMode", "container:x"),
            ("Binds", ["/:/host"]),
            ("Binds", ["/etc:/etc2:ro"]),
            ("Binds", ["./x:/x"]),
            ("Binds", ["taxi-assets-data:/data:rshared"]),
            ("Binds", ["other-volume:/x"]),
            ("Mounts", [{"Type": "bind", "Source": "/", "Target": "/host"}]),
            ("Mounts", [{"Type": "volume", "Source": "taxi-assets-data", "Target": "/x", "BindOptions": {}}]),
            (
                "Mounts",
                [
                    {
                        "Type": "volume",
                        "Source": "taxi-assets-data",
                        "Target": "/x",
                        "VolumeOptions": {"DriverConfig": {"Options": {"o": "bind", "device": "/"}}},
                    }
                ],
            ),
            ("Runtime", "runc"),
        ]
    ],
    ids=repr,
)
def test_a_body_that_reaches_outside_is_refused(change):
    body = launcher_body(**change.pop("host", {}))
    if "HostConfig" in change:
        body["HostConfig"].update(change.pop("HostConfig"))
    body.update(change)
    with pytest.raises(docker_api_proxy.Refused):
        docker_api_proxy.check_create(body, POLICY)


def test_paths_and_methods_outside_the_launchers_calls_are_refused():
    allowed = [
        ("GET", "/version"),
        ("HEAD", "/_ping"),
        ("POST", "/v1.41/containers/create?name=run-1"),
        ("GET", "/v1.41/containers/abc/json"),
        ("POST", "/v1.41/containers/abc/stop?t=10"),
        ("DELETE", "/v1.41/containers/abc?force=True"),
        ("GET", "/v1.41/images/localhost/taxi-assets:test/json"),
    ]
    for method, target in allowed:
        docker_api_proxy.route(method, target)
    refused = [
        ("GET", "/info"),
        ("POST", "/v1.41/containers/abc/exec"),
        ("POST", "/v1.41/containers/abc/update"),
        ("PUT", "/v1.41/containers/abc/archive?path=/"),
        ("POST", "/v1.41/containers/abc/attach"),
        ("POST", "/v1.41/containers/%61bc/start"),
        ("GET", "/v1.41/containers/../info"),
        ("GET", "/v1.41//info"),
        ("POST", "/v4.3.1/libpod/containers/create"),
        ("POST", "/v1.41/containers/abc/stop?t=1&t=2"),
        ("POST", "/v1.41/containers/create?platform=linux"),
        ("PUT", "/v1.41/containers/create"),
        ("POST", "/v1.41/volumes/create"),
        ("GET", "http://x/v1.41/containers/json"),
    ]
    for method, target in refused:
        with pytest.raises(docker_api_proxy.Refused):
            docker_api_proxy.route(method, target)


# -- over HTTP, in front of a recording engine (no containers) ---------------------------------------


class RecordingEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A loopback stand-in for the engine's socket: records what reaches it, answers as podman does
    for the calls the proxy forwards."""

    daemon_threads = True

    def __init__(self, path: str):
        self.seen: list[tuple[str, str, dict | None]] = []
        engine = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def address_string(self):
                return "engine"

            def log_message(self, *args):
                pass

            def do_GET(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                engine.seen.append((self.command, self.path, json.loads(body) if body else None))
                if self.path.endswith("/version"):
                    answer = {"ApiVersion": "1.41"}
                elif "/containers/create" in self.path:
                    answer = {"Id": "c0ffee", "Warnings": []}
                elif self.path.endswith("/json"):
                    labels = {docker_api_proxy.RUN_LABEL: "true"} if "/run" in self.path else {"x": "y"}
                    answer = {"Id": self.path.split("/")[-2] + "-full-id", "Config": {"Labels": labels}}
                else:
                    self.send_response(204)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps(answer).encode()
                self.send_response(201 if "/create" in self.path else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_DELETE = do_GET

        super().__init__(path, Handler)


@pytest.fixture
def proxy(tmp_path):
    engine = RecordingEngine(str(tmp_path / "engine.sock"))
    server = docker_api_proxy.serve(POLICY, str(tmp_path / "engine.sock"), "127.0.0.1", 0)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (engine, server)]
    for thread in threads:
        thread.start()
    try:
        yield server.server_address[1], engine
    finally:
        for s in (server, engine):
            s.shutdown()
            s.server_close()


def send(port: int, head: str, body: bytes = b"") -> tuple[int, dict]:
    """A request written byte for byte (no client library's framing or path clean-up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head_out, _, payload = answer.partition(b"\r\n\r\n")
    return int(head_out.split()[1]), json.loads(payload) if payload else {}


def test_refused_requests_never_reach_the_engine_and_creates_arrive_hardened(proxy):
    port, engine = proxy
    body = json.dumps(launcher_body()).encode()
    close = "Host: x\nConnection: close\n"
    status, answer = send(port, f"POST /v1.41/containers/create HTTP/1.1\n{close}Content-Length: {len(body)}\n", body)
    assert (status, answer["Id"]) == (201, "c0ffee")
    (create,) = [s for s in engine.seen if s[1].endswith("/containers/create")]
    assert create[2]["HostConfig"]["CapDrop"] == ["ALL"] and create[2]["Labels"][docker_api_proxy.RUN_LABEL] == "true"
    assert create[2]["Env"] == launcher_body()["Env"]
    engine.seen.clear()

    privileged = json.dumps(launcher_body(Privileged=True)).encode()
    refused = [
        (f"POST /v1.41/containers/create HTTP/1.1\n{close}Content-Length: {len(privileged)}\n", privileged),
        (f"POST //containers/create HTTP/1.1\n{close}Content-Length: {len(body)}\n", body),
        (f"POST /v1.41/containers/create HTTP/1.1\n{close}Transfer-Encoding: chunked\n", b""),
        (f"POST /v1.41/containers/create HTTP/1.1\n{close}Content-Length: {2 << 20}\n", b""),
        (f"POST /v1.41/containers/run/start HTTP/1.1\n{close}Upgrade: tcp\n", b""),
        (f"POST /v1.41/containers/run/exec HTTP/1.1\n{close}Content-Length: 2\n", b"{}"),
        (f"GET /v1.41/containers/%72un/json HTTP/1.1\n{close}", b""),
        (f"GET http://engine/v1.41/containers/run/json HTTP/1.1\n{close}", b""),
    ]
    for head, payload in refused:
        status, answer = send(port, head, payload)
        assert status == 403 and answer["message"].startswith("refused by"), (head, status, answer)
    assert engine.seen == []

    # A container's own calls: checked on the engine (its labels), then done on its full id.
    assert send(port, f"POST /v1.41/containers/run1/stop?t=5 HTTP/1.1\n{close}")[0] == 204
    assert send(port, f"POST /v1.41/containers/other/start HTTP/1.1\n{close}")[0] == 403
    assert [(m, p) for m, p, _ in engine.seen] == [
        ("GET", "/v1.41/containers/run1/json"),
        ("POST", "/v1.41/containers/run1-full-id/stop?t=5"),
        ("GET", "/v1.41/containers/other/json"),
    ]


# -- on podman ----------------------------------------------------------------------------------------


def proxy_logs() -> str:
    logs = podman("logs", PROXY, capture_output=True, check=False)
    return logs.stdout + logs.stderr


def remove_test_objects() -> None:
    ids = [
        cid
        for run in ("proxy-test-probe", "proxy-test-sleeper", "proxy-test-attack")
        for cid in podman(
            "ps", "-aq", "--filter", f"label=dagster/run_id={run}", capture_output=True, check=False
        ).stdout.split()
    ]
    for name in [*ids, PROXY, OTHER, DAEMON]:
        podman("rm", "-f", "-t", "0", name, check=False, capture_output=True)
    for kind, name in (
        ("network", RUN_NETWORK),
        ("network", API_NETWORK),
        ("volume", VOLUME),
        ("volume", f"{PREFIX}-evil"),
    ):
        podman(kind, "rm", "-f", name, check=False, capture_output=True)


@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.skipif(shutil.which("podman") is None, reason=NO_PODMAN)
@pytest.mark.timeout(1800)
def test_the_daemons_access_leads_to_run_containers_only(tmp_path, tmp_path_factory):
    image = build_image(tmp_path_factory.mktemp("base"), IMAGE)
    remove_test_objects()
    shadow = Path("/etc/shadow").read_text().splitlines()[0]
    escaped_marker = Path("/tmp/taxi-proxy-test-escaped")
    escaped_marker.unlink(missing_ok=True)
    proxy_service = service("docker-api")
    started = time.monotonic()
    with podman_api_socket(tmp_path) as sock:
        try:
            podman("network", "create", RUN_NETWORK, capture_output=True)
            podman("network", "create", "--internal", API_NETWORK, capture_output=True)
            podman("volume", "create", VOLUME, capture_output=True)
            podman("create", "--name", OTHER, "--network", RUN_NETWORK, BASE_IMAGE, "sleep", "600", capture_output=True)
            # The proxy as compose.yaml's `docker-api` service runs it, with this test's names.
            flags = ["--user", proxy_service["user"], "--network", API_NETWORK, "-v", f"{sock}:/var/run/docker.sock"]
            flags += [f"--cap-drop={c}" for c in proxy_service["cap_drop"]]
            flags += [f"--security-opt={o}" for o in proxy_service["security_opt"]]
            flags += ["--read-only"] if proxy_service["read_only"] else []
            env = {
                "TAXI_DOCKER_PROXY_IMAGE": image,
                "TAXI_DOCKER_PROXY_NETWORK": RUN_NETWORK,
                "TAXI_DOCKER_PROXY_VOLUMES": VOLUME,
                "TAXI_DOCKER_PROXY_LISTEN": proxy_service["environment"]["TAXI_DOCKER_PROXY_LISTEN"],
            }
            flags += [f"--env={k}={v}" for k, v in env.items()]
            podman("run", "-d", "--name", PROXY, *flags, image, *proxy_service["command"], capture_output=True)
            proxy_ip = podman(
                "inspect",
                PROXY,
                "--format",
                f'{{{{(index .NetworkSettings.Networks "{API_NETWORK}").IPAddress}}}}',
                capture_output=True,
            ).stdout.strip()
            wait_until(lambda: "listening" in proxy_logs(), 60, "the proxy")

            probe = PROBE.replace('os.environ["PROXY_IP"]', repr(proxy_ip))
            # The daemon's stand-in: the image's user (no group added), on the internal network only.
            attack = podman(
                "run", "--rm", "-i", "--name", DAEMON, "--network", API_NETWORK,
                "-e", f"DOCKER_HOST=tcp://{PROXY}:2375", "-e", f"ATTACK_IMAGE={image}",
                "-e", f"ATTACK_OTHER_IMAGE={BASE_IMAGE}", "-e", f"ATTACK_NETWORK={RUN_NETWORK}",
                "-e", f"ATTACK_VOLUME={VOLUME}", "-e", f"ATTACK_PROXY={PROXY}", "-e", f"ATTACK_OTHER={OTHER}",
                "-e", f"ATTACK_PROBE={probe}",
                image, "sh", "-c", "id -u; id -G; exec python3 -",
                input=ATTACKS.read_text(), capture_output=True, check=False, timeout=600,
            )  # fmt: skip
            proxy_log = proxy_logs()
            assert attack.returncode == 0, attack.stderr[-3000:] + proxy_log[-3000:]
            uid, groups, out = attack.stdout.splitlines()[-3:]
            assert (uid, groups) == (str(UID), str(UID)), "the daemon's stand-in runs as uid 10001, group 10001 only"
            result = json.loads(out)

            # What DockerRunLauncher does worked: create, start, inspect, wait, stop, remove.
            assert result["probe_exit"] == 0 and result["probe_removed"], result
            assert result["sleeper_status"] == "running" and result.get("sleeper_removed"), result
            volume = podman("volume", "inspect", VOLUME, "--format", "{{.Mountpoint}}", capture_output=True)
            probed = json.loads((Path(volume.stdout.strip()) / "probe.json").read_text())
            assert probed == {
                "uid": UID,
                "groups": [UID],
                "CapEff": "0000000000000000",
                "CapBnd": "0000000000000000",
                "NoNewPrivs": "1",
                "reads /etc/shadow": False,
                "writes the volume": True,
                "writes /etc": False,
                "writes /opt/venv": False,
                "reaches the proxy": False,
            }

            # Everything else refused, and nothing that got created could reach the host.
            allowed = {name: a for name, a in result["attempts"].items() if a[0] != 403}
            assert not allowed, json.dumps(allowed, indent=1)
            assert len(result["attempts"]) >= 60
            for name, (cid, _) in result["escaped"].items():
                podman("wait", cid, check=False, capture_output=True, timeout=60)
                logs = podman("logs", cid, check=False, capture_output=True)
                assert shadow not in logs.stdout + logs.stderr, f"{name} read the host's /etc/shadow"
            assert not escaped_marker.exists(), "a container wrote the host's /tmp"
            assert result["listed"] == [result["sleeper_id"]], "only run containers are listed"
            # Each refusal is one line of the proxy's log, and no body reaches it.
            refusals = [line for line in proxy_log.splitlines() if " refused " in line]
            assert len(refusals) >= len(result["attempts"]) - 2  # the two framing attempts may close early
            assert "DAGSTER_RUN_JOB_NAME" not in proxy_log and "/host/etc/shadow" not in proxy_log
            print(f"{len(result['attempts'])} attempts refused; test {time.monotonic() - started:.0f} s")
        finally:
            remove_test_objects()
            escaped_marker.unlink(missing_ok=True)
