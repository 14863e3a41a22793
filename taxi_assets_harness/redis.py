"""A throwaway Redis server (Debian's redis-server) on a free loopback port, with no persistence
(nothing written to disk: a restart empties it, as a broker lost with its memory would be).
With a password, the default user is off and the only user is `taxi` with CELERY_ACL: what
Celery's workers, the run launcher and the lost-task watchdog need, and no more (docs/deploy.md
gives the same line). Used by the Celery deployment test and benchmarks/backfill.py."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from taxi_assets_harness.ports import free_port

# The Redis ACL of a Celery deployment's user (docs/deploy.md#the-broker): kombu's Redis transport
# (queues as lists, unacked messages in a hash and a sorted set, bindings in sets, a mutex, Lua
# scripts run under this same ACL), the result backend (keys with a TTL, PUBLISH/SUBSCRIBE for
# results) and remote control (pidbox fanout over PUBLISH/PSUBSCRIBE, replies in lists). No
# FLUSHALL, CONFIG, KEYS, MONITOR, ACL, DEBUG, SHUTDOWN, EVAL of new scripts...
CELERY_ACL = (
    "~* &* -@all +ping +hello +auth +client|setname +select +brpop +lpush +rpush +llen +lrange +del +get +mget "
    "+set +setex +expire +hset +hget +hdel +hvals +sadd +smembers +srem +zadd +zrem +zrange +zrangebyscore "
    "+zrevrangebyscore +multi +exec +watch +unwatch +discard +time +publish +subscribe +unsubscribe +psubscribe "
    "+punsubscribe +evalsha +script|load +script|exists"
)
CELERY_USER = "taxi"


def redis_binary() -> str | None:
    """The redis-server executable, or None when it is not installed."""
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)


class RedisServer:
    """A throwaway redis-server on a free loopback port, its files in `workdir`, with a password if given."""

    def __init__(self, workdir: Path, password: str | None = None):
        self.workdir = workdir
        self.port = free_port()
        self.password = password
        credentials = f"{CELERY_USER}:{password}@" if password else ""
        self.url = f"redis://{credentials}127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Write its config (private: it holds the password) and start it; return once it answers."""
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "redis.conf"  # holds the password: private
        lines = [f"port {self.port}", "bind 127.0.0.1", 'save ""', "appendonly no", f"dir {self.workdir}"]
        if self.password:
            lines += ["user default off", f"user {CELERY_USER} on >{self.password} {CELERY_ACL}"]
        config.touch(mode=0o600)
        config.write_text("\n".join(lines) + "\n")
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [binary, str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{(self.workdir / 'redis.log').read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate it (kill after 10 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self, down_seconds: float = 1.0) -> None:
        """Stop it (everything it held is lost) and start it again on the same port."""
        self.stop()
        time.sleep(down_seconds)
        self.start()


@contextlib.contextmanager
def redis_server(workdir: Path, password: str | None = None) -> Iterator[RedisServer]:
    """A started RedisServer for the block, stopped after it."""
    server = RedisServer(workdir, password)
    server.start()
    try:
        yield server
    finally:
        server.stop()
