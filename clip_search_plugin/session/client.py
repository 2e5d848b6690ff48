"""Starts, talks to and stops an engine process (JSON lines over stdin/stdout).

Plain Python, no Qt: a reader thread parses the engine's events and calls the callbacks registered for
each request, on that reader thread. Only the engine session (:mod:`.session`) makes an EngineClient; the
process's environment and command line follow the one rule of :mod:`.environment`. Nothing here ever blocks
waiting for the engine unless the caller asks to (``call``, ``run``).
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .environment import EngineUnavailable as EngineUnavailable
from .environment import check_engine_python as check_engine_python
from .environment import engine_command, engine_env

Event = dict[str, Any]
Callback = Callable[[Event], None]
CANCEL_GRACE_S = 30.0  # a request stops within one batch of cancelling; one that does not answer by then is ended


@dataclass
class Pending:
    on_event: Callback
    done: threading.Event = field(default_factory=threading.Event)


class EngineClient:
    """One engine process. ``request`` returns an id; events for it go to ``on_event``. ``env`` is the
    process's environment (:func:`.environment.engine_env`: the one rule; by default without a cache folder)."""

    def __init__(
        self,
        python: str,
        device: str = "auto",
        on_exit: Callable[[str], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.python = python
        self.device = device
        self.env = env if env is not None else engine_env()
        self.on_exit = on_exit
        self.proc: subprocess.Popen[str] | None = None
        self._pending: dict[str, Pending] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._stderr_tail: deque[str] = deque(maxlen=200)
        self._ready = threading.Event()
        self._stopping = False
        self._output_closed = False

    @property
    def running(self) -> bool:
        """Started and still answering. A killed process closes its output before the system can reap
        it, so a closed output counts as not running even while ``poll()`` still says None."""
        return self.proc is not None and not self._output_closed and self.proc.poll() is None

    @property
    def waiting(self) -> int:
        """How many requests are waiting for their answer."""
        with self._lock:
            return len(self._pending)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = 120.0) -> None:
        """Start the process and wait for its ``ready`` event (imports take a few seconds)."""
        check_engine_python(self.python)
        self._stopping = False
        self._output_closed = False
        self._ready.clear()
        try:
            self.proc = subprocess.Popen(
                engine_command(self.python, self.device),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                env=self.env,
                bufsize=1,
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            )
        except OSError as exc:
            raise EngineUnavailable(f"Cannot start the engine with {self.python}: {exc}.") from exc
        threading.Thread(target=self._read_stdout, name="clip-search-engine-out", daemon=True).start()
        threading.Thread(target=self._read_stderr, name="clip-search-engine-err", daemon=True).start()
        if not self._ready.wait(timeout) or not self.running:
            tail = "".join(list(self._stderr_tail)[-15:]).strip()
            self.stop()
            raise EngineUnavailable(
                f"The engine at {self.python} did not start: click Set up engine to make a working one "
                f"(its Check engine tells what this one lacks).\n{tail}"
            )

    def request(self, method: str, params: dict[str, Any], on_event: Callback) -> str:
        """Send a request; ``on_event`` receives its progress / log / result / error events."""
        if not self.running:
            raise EngineUnavailable("The engine is not running.")
        with self._lock:
            self._next += 1
            rid = f"r{self._next}"
            self._pending[rid] = Pending(on_event)
        try:
            self._send({"id": rid, "method": method, "params": params})
        except (OSError, ValueError):  # the process died just now: answer as if its output had ended
            self._output_closed = True
            with self._lock:
                lost = self._pending.pop(rid, None)
            if lost is not None:  # (otherwise the reader thread has already reported it)
                error = {"kind": "engine", "message": self.crash_report(), "crashed": not self._stopping}
                lost.on_event({"id": rid, "event": "error", "error": error})
        return rid

    def call(self, method: str, params: dict[str, Any], timeout: float | None = None) -> Event:
        """Send a request and wait for its result or error event (for scripts, tests and task threads)."""
        answers: queue.Queue[Event] = queue.Queue()

        def keep(event: Event) -> None:
            if event.get("event") in ("result", "error"):
                answers.put(event)

        self.request(method, params, keep)
        try:
            return answers.get(timeout=timeout)
        except queue.Empty as exc:
            raise TimeoutError(f"The engine did not answer {method} within {timeout} s.") from exc

    def run(
        self,
        method: str,
        params: dict[str, Any],
        is_cancelled: Callable[[], bool] | None = None,
        on_event: Callback | None = None,
        cancel_grace: float = CANCEL_GRACE_S,
    ) -> Event:
        """Send a request and wait for its result or error event; progress and log events go to
        ``on_event`` meanwhile. Once ``is_cancelled()`` is true, ``cancel`` is sent; an engine that has not
        answered ``cancel_grace`` seconds later is given up on with a ``cancelled`` error (the caller's
        ``stop()`` then ends the process). For threads that may wait: index tasks, Processing runs."""
        events: queue.Queue[Event] = queue.Queue()
        rid = self.request(method, params, events.put)
        cancelled_at: float | None = None
        while True:
            if cancelled_at is None and is_cancelled is not None and is_cancelled():
                self.cancel(rid)
                cancelled_at = time.monotonic()
            if cancelled_at is not None and time.monotonic() - cancelled_at > cancel_grace:
                message = "Cancelled (the engine did not stop in time and was ended)."
                return {"id": rid, "event": "error", "error": {"kind": "cancelled", "message": message}}
            try:
                event = events.get(timeout=0.2)
            except queue.Empty:
                continue
            if event.get("event") in ("result", "error"):
                return event
            if on_event is not None:
                on_event(event)

    def cancel(self, rid: str) -> None:
        if self.running:
            self._send({"id": f"cancel-{rid}", "method": "cancel", "params": {"target": rid}})

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the engine to shut down; kill it if it does not within ``timeout``. Never leaves an orphan."""
        self._stopping = True
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self._send({"id": "shutdown", "method": "shutdown", "params": {}})
                proc.wait(timeout=timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=timeout)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()

    def _read_stdout(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        try:
            for line in proc.stdout:
                self._dispatch(line)
        except (OSError, ValueError):
            pass
        self._on_closed()

    def _dispatch(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self._stderr_tail.append(f"(not JSON on the engine's output) {line}")
            return
        if event.get("event") == "ready":
            self._ready.set()
            return
        with self._lock:
            pending = self._pending.get(str(event.get("id")))
            if pending is not None and event.get("event") in ("result", "error"):
                del self._pending[str(event.get("id"))]
        if pending is not None:
            pending.on_event(event)

    def _read_stderr(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        try:
            for line in proc.stderr:
                self._stderr_tail.append(line)
        except (OSError, ValueError):
            pass

    def _on_closed(self) -> None:
        """The engine's output ended: fail every open request, and report an unexpected exit."""
        self._output_closed = True
        self._ready.set()
        with self._lock:
            pending, self._pending = self._pending, {}
        reason = "The engine stopped." if self._stopping else self.crash_report()
        for rid, p in pending.items():
            error = {"kind": "engine", "message": reason, "crashed": not self._stopping}
            p.on_event({"id": rid, "event": "error", "error": error})
        if not self._stopping and self.on_exit is not None:
            self.on_exit(reason)

    def crash_report(self) -> str:
        tail = "".join(list(self._stderr_tail)[-8:]).strip()
        code = self.proc.poll() if self.proc is not None else None
        return f"The engine process ended unexpectedly (exit code {code}); it restarts on the next request." + (
            f"\nLast log lines:\n{tail}" if tail else ""
        )
