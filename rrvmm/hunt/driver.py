"""The hunt loop: keep the pool busy, count, keep the failing traces, stop in time.

Stops when the condition held ``keep`` times, ``runs`` runs are done, a run could not be
made at all (bad options, missing files: repeating it would only repeat the error), or the
user interrupts; in every case the failing traces found so far stay on disk, packed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rrvmm.host.chaos import new_seed
from rrvmm.hunt.condition import Until
from rrvmm.hunt.pools import Pool
from rrvmm.hunt.recording import RunOutcome, RunTask

__all__ = ["HuntConfig", "HuntSummary", "hunt"]

_WAIT_S = 0.2


@dataclass
class HuntConfig:
    until: Until
    runs: int
    keep: int
    timeout_s: float
    chaos: bool
    record_args: list[str]
    keep_dir: Path
    kernel_name: str
    ship: dict[str, tuple[str, bytes]] = field(default_factory=dict)


@dataclass
class HuntSummary:
    engine: str
    until: str
    runs: int = 0  # finished runs (timeouts included, stopped ones not)
    failures: int = 0  # runs where the condition held
    timeouts: int = 0
    elapsed_s: float = 0.0
    first_failure_s: float | None = None  # from the start of the hunt
    kept: list[dict[str, Any]] = field(default_factory=list)  # path, run, seed, status
    interrupted: bool = False
    error: str = ""  # the run error that stopped the hunt
    error_status: int = 0

    @property
    def rate(self) -> float | None:
        return self.failures / self.runs if self.runs else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reproduction_rate"] = self.rate
        return out


def _account(
    o: RunOutcome, cfg: HuntConfig, s: HuntSummary, start: float, stopping: bool = False
) -> None:
    if o.error:
        if not s.error and not stopping:
            s.error, s.error_status = o.error, o.status or 1
        return
    if o.stopped:
        return
    s.runs += 1
    s.timeouts += o.timed_out
    if not o.matched:
        return
    s.failures += 1
    if s.first_failure_s is None:
        s.first_failure_s = round(time.monotonic() - start, 3)
    path = o.kept
    if path is None and o.trace is not None:  # from a cluster worker: write it here
        seed = "plain" if o.seed is None else f"seed{o.seed}"
        p = cfg.keep_dir / f"{Path(cfg.kernel_name).stem}-{o.index}-{seed}.rrt"
        p.write_bytes(o.trace)
        path = str(p)
    s.kept.append({"path": path, "run": o.index, "seed": o.seed, "status": o.status})


def hunt(
    cfg: HuntConfig, pool: Pool, progress: Callable[[HuntSummary, int], None] | None = None
) -> HuntSummary:
    """Run until the condition held ``cfg.keep`` times or ``cfg.runs`` runs are done."""
    s = HuntSummary(pool.name, cfg.until.spec)
    start = time.monotonic()
    submitted = 0
    try:
        while True:
            while (
                pool.in_flight() < pool.slots
                and submitted < cfg.runs
                and s.failures < cfg.keep
                and not s.error
            ):
                pool.submit(
                    RunTask(
                        submitted, new_seed() if cfg.chaos else None, cfg.record_args,
                        cfg.until, cfg.timeout_s, cfg.kernel_name, cfg.ship,
                    )
                )  # fmt: skip
                submitted += 1
            if pool.in_flight() == 0 or s.failures >= cfg.keep or s.error:
                break
            for o in pool.completed(_WAIT_S):
                _account(o, cfg, s, start)
            s.elapsed_s = round(time.monotonic() - start, 3)
            if progress is not None:
                progress(s, pool.in_flight())
    except KeyboardInterrupt:
        s.interrupted = True
    finally:
        for o in pool.stop():
            _account(o, cfg, s, start, stopping=True)
        s.elapsed_s = round(time.monotonic() - start, 3)
    return s
