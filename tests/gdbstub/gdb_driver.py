"""Driving a real gdb (through pygdbmi) against `rrvmm replay --gdb`, for tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pygdbmi.gdbcontroller import GdbController


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReplayServer:
    """`rrvmm replay TRACE --gdb 127.0.0.1:PORT` as a subprocess."""

    def __init__(self, trace: Path, *extra: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rrvmm", "replay", str(trace), "--gdb", f":{self.port}",
             *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        # the server says where it listens once it is ready (it serves one gdb only, so
        # probing the port with a connection would use it up)
        assert self.proc.stderr is not None
        self.banner = self.proc.stderr.readline().decode()
        if "gdb server" not in self.banner:
            self.proc.kill()
            raise RuntimeError(f"replay server did not start: {self.banner}")

    def close(self) -> str:
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.stderr.read().decode()  # type: ignore[union-attr]


class Gdb:
    """A gdb process speaking MI; ``cmd`` returns console text, ``run`` waits for a stop."""

    def __init__(self, elf: Path | None) -> None:
        self.mi = GdbController(["gdb", "--nx", "--quiet", "--interpreter=mi3"])
        self.cmd("set pagination off")
        self.cmd("set confirm off")
        if elf is not None:
            self.cmd(f"file {elf}")

    def _collect(self, responses: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
        streams = ("console", "log", "target", "output")
        text = "".join(r["payload"] for r in responses if r["type"] in streams and r["payload"])
        return text, responses

    def cmd(self, command: str, timeout: float = 30) -> str:
        """A command that finishes with ^done / ^error; its console output."""
        responses = self.mi.write(command, timeout_sec=timeout)
        while not any(r["type"] == "result" for r in responses):
            responses += self.mi.get_gdb_response(timeout_sec=timeout)
        err = [r for r in responses if r["type"] == "result" and r["message"] == "error"]
        text, _ = self._collect(responses)
        if err:
            raise RuntimeError(f"{command}: {err[0]['payload']}")
        return text

    def run(self, command: str, timeout: float = 60) -> dict[str, Any]:
        """An execution command; returns the *stopped record's payload (+ 'text')."""
        responses = self.mi.write(command, timeout_sec=timeout, raise_error_on_timeout=False)
        deadline = time.monotonic() + timeout
        while not any(r["type"] == "notify" and r["message"] == "stopped" for r in responses):
            if any(r["type"] == "result" and r["message"] == "error" for r in responses):
                raise RuntimeError(f"{command}: {responses}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command}: no stop in {timeout}s: {responses}")
            responses += self.mi.get_gdb_response(timeout_sec=5, raise_error_on_timeout=False)
        stop = next(r for r in responses if r["type"] == "notify" and r["message"] == "stopped")
        payload = dict(stop["payload"] or {})
        payload["text"], _ = self._collect(responses)
        return payload

    def eval(self, expr: str) -> str:
        responses = self.mi.write(f"-data-evaluate-expression {expr}", timeout_sec=30)
        for r in responses:
            if r["type"] == "result":
                if r["message"] == "error":
                    raise RuntimeError(r["payload"])
                return r["payload"]["value"]
        raise RuntimeError(f"no value for {expr}")

    def pc(self) -> int:
        return int(self.eval("$pc").split()[0], 16)

    def close(self) -> None:
        try:
            self.mi.write("kill", timeout_sec=5, raise_error_on_timeout=False)
        finally:
            self.mi.exit()


@contextmanager
def gdb_on_replay(
    trace: Path, elf: Path | None, *server_args: str, before: tuple[str, ...] = ()
) -> Iterator[Gdb]:
    """A gdb attached to `rrvmm replay TRACE --gdb` (``before``: commands ahead of the
    connection, e.g. the architecture when there is no ELF); both end with the block."""
    server = ReplayServer(trace, *server_args)
    g = Gdb(elf)
    try:
        for command in before:
            g.cmd(command)
        g.cmd(f"target remote 127.0.0.1:{server.port}")
        yield g
    finally:
        g.close()
        server.close()
