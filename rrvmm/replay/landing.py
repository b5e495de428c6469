"""Landing a recorded forced exit: the pieces plain replay and the debugger engine share.

Both run the CPU to the point where a kick stopped the recording (determinism.md,
"Landing a forced exit"), but around different loops: plain replay (``Replayer._land``)
runs straight to it, the engine (``ReplayEngine._run_free``) runs with the user's
breakpoints and watchpoints armed as well. What a landing *is* lives here, once: when it
can be forged without running, how a counting CPU runs to it, and what a vCPU found halted
inside KVM after a kick means. The fingerprint itself is ``fingerprint.LandingProbe``.
"""

from __future__ import annotations

from enum import Enum

from rrvmm.cpu.backend import (
    CpuBackend,
    InstructionCounting,
    KernelIrqchip,
    RecordableCpu,
    VcpuExit,
)
from rrvmm.machine.interrupts import deliverable_vector
from rrvmm.replay.fingerprint import Landing, LandingProbe

__all__ = [
    "HALTED_LANDING_POLL_NS",
    "STUCK_POLL_NS",
    "Halt",
    "after_kick",
    "forge_landing",
    "run_to_count",
]

# Kernel irqchip: a vCPU halted inside KVM_RUN comes back only when kicked. When a halted
# landing is due the replay looks for it soon (the kicker backs off from here on) ...
HALTED_LANDING_POLL_NS = 200_000
# ... otherwise only now and then, so that a guest halted for good is reported, not waited on.
STUCK_POLL_NS = 20_000_000


class Halt(Enum):
    """What a kernel-irqchip vCPU that came back from a kick (an INTR exit) is doing."""

    RUNNING = "running"  # not halted: run on
    LANDED = "landed"  # halted in the recorded HLT, in the recorded state: the landing
    WAKING = "waking"  # halted elsewhere, but KVM's 8259 has an interrupt for it
    STUCK = "stuck"  # halted with nothing to wake it: nothing in the recording waits here


def after_kick(chip: KernelIrqchip, probe: LandingProbe, landing: Landing | None) -> Halt:
    """Classify a kicked kernel-irqchip vCPU against the forced exit due (``landing``).

    The landing is only compared when the vCPU is halted and a halted landing is due; a
    vCPU halted in another state is WAKING or STUCK by whether an interrupt is deliverable.
    """
    if not chip.halted():
        return Halt.RUNNING
    if landing is not None and landing.halted and probe.matches(landing):
        return Halt.LANDED
    return Halt.STUCK if deliverable_vector(chip) is None else Halt.WAKING


def forge_landing(cpu: RecordableCpu, probe: LandingProbe, landing: Landing) -> VcpuExit:
    """The recorded forced exit, reported without running: the kick came before the guest
    ran an instruction (or the CPU already stands in the recorded state). What the guest
    wrote so far is behind the fingerprint, as the recorder's own read of the log was."""
    probe.passed()
    return cpu.forge_exit(landing.kind, landing.rip)


def run_to_count(cpu: CpuBackend, counter: InstructionCounting, count: int) -> VcpuExit:
    """Run a CPU that counts instructions exactly (``counter``: the same CPU, as it counts)
    to instruction ``count`` (an INTR exit there) or to an earlier real exit; the limit is
    gone again afterwards."""
    counter.set_instruction_limit(count)
    try:
        return cpu.run()
    finally:
        counter.set_instruction_limit(None)
