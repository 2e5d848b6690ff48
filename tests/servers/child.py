"""Runs a test server in a process of its own and drives it from the test (standard library only).

Why a process: the code under test reads the server through GDAL (rasterio) or QGIS, and rasterio holds the
GIL through some GDAL calls that make HTTP requests (after opening a /vsicurl/ file, GDAL lists its folder and
looks for side-car files), so a server thread in the test's own interpreter cannot answer and the read hangs.

The test side (``ServerProcess``) starts ``python -m tests.servers.child SPEC`` with the same interpreter and
talks to it in JSON lines over its stdin / stdout: start, stop, knob changes, the request log. The server
process ends when told to, or when its stdin closes (the test process ended).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import weakref
from types import TracebackType
from typing import Any, ClassVar, Self

from .backend import HOST, LoggedRequest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTABLE = frozenset({"delay_s", "blank"})
PLAIN_CALLS = frozenset({"stop", "reset", "fail_first", "always", "clear_log", "require_basic"})


def _end(process: subprocess.Popen[str]) -> None:
    """Make sure a server process does not outlive its test (closing stdin asks it to leave)."""
    if process.poll() is None:
        try:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None and not pipe.closed:
            pipe.close()


class ServerProcess:
    """A test server in its own process; usable as a context manager (which ends the process on exit).

    ``stop()`` closes the listening socket and cuts open connections but keeps the process and its log;
    ``start()`` listens again on the same port. Knobs: ``delay_s`` (seconds before each answer),
    ``fail_first(n, code, retry_after)``, ``always(code, paths)``, ``reset()``.
    """

    backend: ClassVar[str] = "tests.servers.backend:Backend"
    default_prefix: ClassVar[str] = "/"

    def __init__(self, port: int = 0, **backend_kwargs: Any) -> None:
        self._spec = json.dumps({"backend": self.backend, "kwargs": backend_kwargs})
        self._port = port
        self._running = False
        self._delay_s = 0.0
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    # process and protocol --------------------------------------------------------------------------------
    def _spawn(self) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
        process = subprocess.Popen(  # this interpreter, this package's module
            [sys.executable, "-m", "tests.servers.child", self._spec], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=REPO, env=env, start_new_session=True,
        )
        weakref.finalize(self, _end, process)
        return process

    def _call(self, op: str, *args: Any) -> Any:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._spawn()
            process = self._process
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
                process.stdin.flush()
                line = process.stdout.readline()
            except OSError:
                line = ""
        if not line:
            raise RuntimeError(f"the {type(self).__name__} process ended (exit code {process.poll()}); see stderr")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{type(self).__name__}: {answer['error']}")
        return answer["result"]

    # lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> Self:
        """Listen; the first start with port 0 takes a free port, later starts take the same one again."""
        self._port = self._call("start", self._port)
        self._running = True
        return self

    def stop(self) -> None:
        """Stop listening and cut open keep-alive connections, as a server going down would."""
        if self._process is not None and self._process.poll() is None:
            self._call("stop")
        self._running = False

    def close(self) -> None:
        """Stop and end the server process (its log is gone; a later ``start()`` begins a new one)."""
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            _end(process)
        self._running = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{HOST}:{self._port}"

    # fault knobs -----------------------------------------------------------------------------------------
    @property
    def delay_s(self) -> float:
        """Seconds the server sleeps before answering each request (a slow server)."""
        return self._delay_s

    @delay_s.setter
    def delay_s(self, seconds: float) -> None:
        self._call("set", "delay_s", float(seconds))
        self._delay_s = float(seconds)

    def fail_first(self, n: int, code: int = 503, retry_after: float | None = None) -> None:
        """The first ``n`` requests of each request target answer ``code`` (with Retry-After when given)."""
        self._call("fail_first", n, code, retry_after)

    def always(self, code: int | None, paths: list[str] | None = None) -> None:
        """Every request (or those whose path, or full target, is in ``paths``) answers ``code``; None: off."""
        self._call("always", code, None if paths is None else list(paths))

    def require_basic(self, user: str | None, password: str = "") -> None:
        """Answer 401 to every request without these HTTP Basic credentials (None: open to all)."""
        self._call("require_basic", user, password)

    def reset(self) -> None:
        """Back to a well-behaved server with an empty log."""
        self._call("reset")
        self._delay_s = 0.0

    # request log -----------------------------------------------------------------------------------------
    @property
    def log(self) -> list[LoggedRequest]:
        """Every request so far, in order, with the bytes sent and the Range header."""
        return [LoggedRequest(*record) for record in self._call("records")]

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """(method, target, status) of every request so far, in order."""
        return [(r.method, r.path, r.status) for r in self.log]

    def count(self, prefix: str | None = None, method: str | None = None, status: int | None = None) -> int:
        """How many requests had a target starting with ``prefix`` (and the given method / status)."""
        prefix = self.default_prefix if prefix is None else prefix
        return sum(
            1 for r in self.log
            if r.path.startswith(prefix) and method in (None, r.method) and status in (None, r.status)
        )

    def bytes_sent(self, prefix: str = "/") -> int:
        """Body bytes sent for targets under ``prefix``."""
        return sum(r.sent for r in self.log if r.path.startswith(prefix))

    def clear_log(self) -> None:
        self._call("clear_log")


def _do(backend: Any, op: str, args: list[Any]) -> Any:
    """One operation of the protocol on the backend; returns something JSON can carry."""
    if op == "start":
        return backend.start(*args).port
    if op == "set":
        name, value = args
        if name not in SETTABLE or not hasattr(backend, name):
            raise ValueError(f"{name!r} is not a knob of {type(backend).__name__}")
        setattr(backend, name, value)
        return None
    if op == "records":
        return [list(record) for record in backend.records()]
    if op in PLAIN_CALLS:
        getattr(backend, op)(*args)
        return None
    if op == "exit":
        return None
    raise ValueError(f"unknown operation {op!r}")


def main(argv: list[str]) -> int:
    """The server process: build the backend named in the spec, then obey JSON lines until stdin closes."""
    spec = json.loads(argv[0])
    module, _, name = spec["backend"].partition(":")
    backend = getattr(importlib.import_module(module), name)(**spec["kwargs"])
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed goes to stderr, never into the protocol
    try:
        for line in sys.stdin:
            request = json.loads(line)
            try:
                answer = {"result": _do(backend, request["op"], request["args"])}
            except Exception as error:  # noqa: BLE001 - reported to the test, which raises it there
                answer = {"error": f"{type(error).__name__}: {error}"}
            protocol.write(json.dumps(answer) + "\n")
            if request["op"] == "exit":
                break
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
