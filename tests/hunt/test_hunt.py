"""`rrvmm hunt` on guests/flaky (software CPU): finds the race, keeps it packed, and the
kept trace replays to the same failure anywhere; Ctrl-C; a real Dask cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hunt_procs import REPO, processes_mentioning
from rrvmm_cli import rrvmm

FLAKY = ["--backend", "soft", "--append", "ticks=5"]


def _hunt(*args: str, cwd: Path, timeout: float = 300):  # noqa: ANN202
    return rrvmm("hunt", *args, stdin=None, timeout=timeout, cwd=str(cwd),
                 env={"PYTHONPATH": str(REPO)})  # fmt: skip


def _copy_guest(guest, tmp_path: Path) -> Path:  # noqa: ANN001
    where = tmp_path / "images"
    where.mkdir()
    return Path(shutil.copy(guest("flaky"), where / "flaky.mb"))


def _replays_to_the_panic(trace: Path, cwd: Path) -> None:
    rep = rrvmm("replay", str(trace), stdin=None, timeout=300, cwd=str(cwd))
    assert rep.status == 0, rep.err
    assert "PANIC: lost update" in rep.out and "replay matched all" in rep.err


def test_hunt_finds_the_race_and_the_kept_trace_replays_without_images(
    guest,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    kernel = _copy_guest(guest, tmp_path)
    kept_dir = tmp_path / "kept"
    h = _hunt("--runs", "10", "-j", "2", "--json", "-o", str(kept_dir), "--",
              "--kernel", str(kernel), *FLAKY, cwd=tmp_path)  # fmt: skip
    assert h.status == 0, h.err
    summary = json.loads(h.out)
    assert summary["failures"] >= 1 and summary["runs"] <= 10
    assert summary["engine"] == "local" and summary["until"] == "panic"
    assert 0 < summary["reproduction_rate"] <= 1 and summary["first_failure_s"] > 0
    kept = [Path(k["path"]) for k in summary["kept"]]
    # only the failing traces stay (the rest, and every run's work dir, are gone)
    assert sorted(kept_dir.iterdir()) == sorted(kept_dir / k.name for k in kept)
    shutil.rmtree(kernel.parent)  # the images are gone: the packed trace carries them
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    trace = shutil.move(kept_dir / kept[0].name, elsewhere / "race.rrt")
    info = json.loads(rrvmm("trace", "info", "--json", str(trace)).out)
    assert info["packed"] and info["chaos"]["seed"] == summary["kept"][0]["seed"]
    for _ in range(10):
        _replays_to_the_panic(Path(trace), elsewhere)


def test_plain_recordings_on_the_software_cpu_never_fail(guest, tmp_path: Path) -> None:  # noqa: ANN001
    """Without chaos the software CPU lands every tick on time: the race never shows, and
    a hunt that finds nothing says so with status 1 and keeps nothing."""
    h = _hunt("--no-chaos", "--runs", "2", "-j", "2", "--json", "-o", str(tmp_path / "k"),
              "--", "--kernel", str(guest("flaky")), *FLAKY, cwd=tmp_path)  # fmt: skip
    assert h.status == 1, h.err
    summary = json.loads(h.out)
    assert summary["runs"] == 2 and summary["failures"] == 0 and summary["kept"] == []
    assert list((tmp_path / "k").iterdir()) == []


def test_until_status_and_regex(guest, tmp_path: Path) -> None:  # noqa: ANN001
    h = _hunt("--until", "status:0", "--no-chaos", "--runs", "3", "-j", "1", "--json", "--",
              "--kernel", str(guest("flaky")), *FLAKY, cwd=tmp_path)  # fmt: skip
    assert h.status == 0, h.err
    summary = json.loads(h.out)
    assert summary["runs"] == 1 and summary["failures"] == 1  # stops at the first hit
    assert Path(summary["output"]).parent == Path("traces")
    h = _hunt("--until", r"regex:^flaky: ok updates=\d+", "--no-chaos", "--runs", "1",
              "--json", "--", "--kernel", str(guest("flaky")), *FLAKY, cwd=tmp_path)  # fmt: skip
    assert json.loads(h.out)["failures"] == 1


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (["--until", "boom"], 64, "--until"),
        (["--until", "regex:("], 64, "bad regex"),
        (["--until", "status:999"], 64, "0-255"),
        (["--runs", "0"], 64, "--runs"),
        (["--", "--kernel", "/nonexistent.mb"], 66, "not found"),
        (["--", "-o", "x.rrt"], 64, "set by hunt"),
        (["--", "--chaos", "3"], 64, "set by hunt"),
        (["--", "--frob"], 64, "--frob"),
        (["--", "--memory", "lots"], 64, "--memory"),
    ],
)
def test_bad_options_are_one_line(tmp_path: Path, args: list[str], status: int, words: str) -> None:
    h = _hunt(*args, cwd=tmp_path)
    assert h.status == status, h.err
    assert h.err.strip().count("\n") == 0 and words in h.err
    assert not list(tmp_path.rglob("*.rrt"))


def test_ctrl_c_stops_every_run_and_keeps_what_was_found(guest, tmp_path: Path) -> None:  # noqa: ANN001
    """SIGINT to the hunt's process group (what Ctrl-C on a terminal sends): the running
    recorders (in their own groups) are killed, the failing traces found are kept, packed
    and whole, and nothing is left running."""
    kernel = _copy_guest(guest, tmp_path)
    kept_dir = tmp_path / "kept"
    hunt = subprocess.Popen(
        [sys.executable, "-m", "rrvmm", "hunt", "--runs", "1000", "--keep", "1000", "-j", "2",
         "--json", "-o", str(kept_dir), "--", "--kernel", str(kernel), *FLAKY],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not any(p.suffix == ".rrt" for p in kept_dir.glob("*.rrt")):
        assert hunt.poll() is None and time.monotonic() < deadline, "no failure found"
        time.sleep(0.2)
    time.sleep(1.0)  # a recording is running again
    assert processes_mentioning(str(kernel)), "no recorder running to stop"
    os.killpg(hunt.pid, signal.SIGINT)
    out, err = hunt.communicate(timeout=60)
    assert hunt.returncode == 130, err
    assert "interrupted" in err.decode()
    summary = json.loads(out)
    assert summary["interrupted"] and summary["failures"] >= 1
    assert processes_mentioning(str(tmp_path)) == []
    kept = sorted(kept_dir.iterdir())
    assert kept == sorted(Path(k["path"]) for k in summary["kept"])  # no half-written runs
    for trace in kept:
        info = json.loads(rrvmm("trace", "info", "--json", str(trace)).out)
        assert info["packed"] and info["complete"] and info["end"]["status"] == 3


def test_hunt_over_a_dask_cluster_brings_the_trace_back(
    dask_cluster: str,
    guest,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    kernel = _copy_guest(guest, tmp_path)
    kept_dir = tmp_path / "kept"
    h = _hunt("--cluster", dask_cluster, "--runs", "8", "--json", "-o", str(kept_dir), "--",
              "--kernel", str(kernel), *FLAKY, cwd=tmp_path)  # fmt: skip
    assert h.status == 0, h.err
    summary = json.loads(h.out)
    assert summary["engine"] == "dask" and summary["failures"] >= 1
    shutil.rmtree(kernel.parent)
    trace = Path(summary["kept"][0]["path"])
    assert trace.parent == kept_dir
    _replays_to_the_panic(trace, tmp_path)


def test_unreachable_cluster_is_one_line(tmp_path: Path, guest) -> None:  # noqa: ANN001
    pytest.importorskip("distributed")
    h = _hunt("--cluster", "tcp://127.0.0.1:9", "--", "--kernel", str(guest("flaky")),
              cwd=tmp_path, timeout=120)  # fmt: skip
    assert h.status == 69, h.err
    assert h.err.strip().count("\n") == 0 and "--cluster" in h.err
