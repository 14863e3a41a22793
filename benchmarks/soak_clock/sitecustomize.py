"""The soak's clock (benchmarks/soak.py): every Python process started with this folder on
PYTHONPATH and SOAK_CLOCK_FILE set runs its wall clock at the real one plus the offset (seconds)
that file holds, and follows the file when the soak rewrites it, without a restart.

time-machine moves `time.time`, `datetime.now` and their relatives, not `time.monotonic` nor
`time.perf_counter`: Python's timed waits (Event.wait, Lock.acquire, time.sleep) and Dagster's
loop intervals keep real time, unlike libfaketime (../shared/notes/time-travel.md). A thread
re-reads the file every POLL_SECONDS; a forked child (Celery's pool processes) starts its own.

One exception: grpc's Python layer turns a call's timeout into a deadline with `time.time()`, and
its C core compares that deadline with the real clock. Under a clock moved 3 weeks ahead, a gRPC server's
start never returned (cygrpc's Server.start polls its queue until `time.time()`: 3 weeks on), and
the code server never came up. grpc's modules that do such arithmetic get the
real `time.time` (GRPC_MODULES), so their timeouts mean what they say.
"""

import os
import sys

_CLOCK_FILE = os.environ.get("SOAK_CLOCK_FILE")
# A jump reaches every process within this (the soak waits for no run to be in flight first).
POLL_SECONDS = 0.1
GRPC_MODULES = ("grpc._cython.cygrpc", "grpc._channel", "grpc._common", "grpc._server", "grpc._utilities")


class _RealTime:
    """The `time` module as grpc's deadline arithmetic must see it: the real wall clock."""

    def __init__(self, real_time):
        import time

        self._time, self.time = time, real_time

    def __getattr__(self, name):
        return getattr(self._time, name)


class _GrpcRealClock:
    """An import hook: grpc's deadline modules get `_RealTime` as their `time`."""

    def __init__(self, real_time):
        self.real_time = real_time

    def find_spec(self, name, path=None, target=None):
        if name not in GRPC_MODULES:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        load, real_time = spec.loader.exec_module, self.real_time

        def exec_module(module):
            load(module)
            module.time = _RealTime(real_time)

        spec.loader.exec_module = exec_module
        return spec


def _start() -> None:
    import threading
    import time

    import _time_machine
    import time_machine

    def read() -> float:
        with open(_CLOCK_FILE) as clock:
            return float(clock.read().strip() or 0)

    sys.meta_path.insert(0, _GrpcRealClock(_time_machine.original_time))
    offset = read()
    traveller = time_machine.travel(time.time() + offset, tick=True).start()
    state = {"offset": offset}

    def follow() -> None:
        while True:
            time.sleep(POLL_SECONDS)
            try:
                new = read()
            except (OSError, ValueError):  # being rewritten: read it next time
                continue
            if new != state["offset"]:
                traveller.shift(new - state["offset"])
                state["offset"] = new

    def watch() -> None:
        threading.Thread(target=follow, name="soak-clock", daemon=True).start()

    watch()
    os.register_at_fork(after_in_child=watch)


if _CLOCK_FILE:
    _start()
