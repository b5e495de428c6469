"""Dask distributed vs Ray as the engine under `rrvmm hunt --cluster`, measured here.

For each engine, on 127.0.0.1: a scheduler/head and two single-threaded worker processes
are started; measured are the start-up time (launch until the client sees both workers),
the client's connect time, the per-task overhead (N no-op tasks, submitted together and
gathered) and the cost of bringing a 1 MiB result back (a packed trace comes back as
bytes), the resident memory of everything the engine started, and its installed size.
Each engine is measured in a fresh child process (``--engine NAME``).

    python bench/hunt_engines.py [--tasks 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _noop(i: int) -> int:
    return i


def _mib(i: int) -> bytes:
    return bytes([i & 0xFF]) * (1 << 20)


def _rss_mib(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return round(total / 2**20, 1)


def _tree(pid: int) -> set[int]:
    try:
        p = psutil.Process(pid)
        return {pid, *(c.pid for c in p.children(recursive=True))}
    except psutil.Error:
        return set()


def _installed_mib(*modules: str) -> float:
    total = 0
    for name in modules:
        mod = __import__(name)
        for root, _dirs, files in os.walk(Path(mod.__file__).parent):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return round(total / 2**20, 1)


def _time_tasks(submit_all, n: int) -> float:  # noqa: ANN001
    t = time.perf_counter()
    submit_all(n)
    return (time.perf_counter() - t) / n * 1e3


def bench_dask(tasks: int) -> dict:
    from distributed import Client

    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                          "127.0.0.1", "--port", str(port), "--no-dashboard"], **quiet)
    ]  # fmt: skip
    procs += [
        subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", addr,
                          "--nthreads", "1", "--no-dashboard"], **quiet)
        for _ in range(2)
    ]  # fmt: skip
    try:
        tc = time.perf_counter()
        client = Client(addr, timeout=60)
        connect_ms = (time.perf_counter() - tc) * 1e3
        client.wait_for_workers(2, timeout=120)
        startup = time.perf_counter() - t0
        client.gather(client.map(_noop, range(20), pure=False))  # warm up
        noop_ms = _time_tasks(
            lambda n: client.gather(client.map(_noop, range(n), pure=False)), tasks
        )
        mib_ms = _time_tasks(
            lambda n: client.gather(client.map(_mib, range(n), pure=False)), max(10, tasks // 10)
        )
        pids = set().union(*(_tree(p.pid) for p in procs))
        rss = _rss_mib(pids)
        client.close()
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return {
        "engine": "dask",
        "startup_s": round(startup, 2),
        "connect_ms": round(connect_ms, 1),
        "task_overhead_ms": round(noop_ms, 2),
        "mib_result_ms": round(mib_ms, 2),
        "processes": len(pids),
        "rss_mib": rss,
        "installed_mib": _installed_mib("dask", "distributed"),
    }


def bench_ray(tasks: int) -> dict:
    import ray

    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="ray-bench-")
    before = {p.pid for p in psutil.process_iter()}
    t0 = time.perf_counter()
    subprocess.run(
        ["ray", "start", "--head", "--port", str(port), "--num-cpus", "2",
         "--include-dashboard", "false", "--temp-dir", tmp, "--disable-usage-stats"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        tc = time.perf_counter()
        ray.init(address=f"127.0.0.1:{port}", logging_level="ERROR", log_to_driver=False)
        connect_ms = (time.perf_counter() - tc) * 1e3
        noop = ray.remote(num_cpus=1)(_noop)
        mib = ray.remote(num_cpus=1)(_mib)
        ray.get([noop.remote(i) for i in range(2)])  # both worker processes up
        startup = time.perf_counter() - t0
        ray.get([noop.remote(i) for i in range(20)])
        noop_ms = _time_tasks(lambda n: ray.get([noop.remote(i) for i in range(n)]), tasks)
        mib_ms = _time_tasks(
            lambda n: ray.get([mib.remote(i) for i in range(n)]), max(10, tasks // 10)
        )
        pids = {p.pid for p in psutil.process_iter()} - before - {os.getpid()}
        rss = _rss_mib(pids)
        ray.shutdown()
    finally:
        subprocess.run(["ray", "stop", "--force"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)  # fmt: skip
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "engine": "ray",
        "startup_s": round(startup, 2),
        "connect_ms": round(connect_ms, 1),
        "task_overhead_ms": round(noop_ms, 2),
        "mib_result_ms": round(mib_ms, 2),
        "processes": len(pids),
        "rss_mib": rss,
        "installed_mib": _installed_mib("ray"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--engine", choices=("dask", "ray"))
    args = ap.parse_args()
    if args.engine:
        fn = bench_dask if args.engine == "dask" else bench_ray
        print(json.dumps(fn(args.tasks)))
        return
    rows = []
    for engine in ("dask", "ray"):
        p = subprocess.run(
            [sys.executable, __file__, "--engine", engine, "--tasks", str(args.tasks)],
            capture_output=True, text=True,
        )  # fmt: skip
        if p.returncode != 0:
            print(f"{engine}: failed: {p.stderr.strip().splitlines()[-1:]}")
            continue
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
    cols = ["engine", "startup_s", "connect_ms", "task_overhead_ms", "mib_result_ms",
            "processes", "rss_mib", "installed_mib"]  # fmt: skip
    print(" ".join(f"{c:>16}" for c in cols))
    for r in rows:
        print(" ".join(f"{r[c]!s:>16}" for c in cols))


if __name__ == "__main__":
    main()
