"""Every repo guest, end to end on each CPU backend, through the real command line."""

from __future__ import annotations

import pytest

from rrvmm_cli import rrvmm, rrvmm_after


def test_demo_runs_by_default(backend: str) -> None:
    r = rrvmm("run", "--backend", backend)
    assert r.status == 0, r.err
    assert r.out.startswith("rrvmm demo guest: hello from long mode\n")
    for n in range(1, 6):
        assert f"tick {n}\n" in r.out
    assert r.out.endswith("bye\n")


def test_demo_echoes_serial_input(backend: str) -> None:
    r = rrvmm("run", "--backend", backend, stdin=b"typed by the host\n")
    assert r.status == 0, r.err
    assert "typed by the host" in r.out.split("echoing serial input")[1]


@pytest.mark.parametrize("status", [0, 3, 7])
def test_exit_status_comes_from_isa_debug_exit(backend: str, guest, status: int) -> None:  # noqa: ANN001
    r = rrvmm(
        "run", "--backend", backend, "--kernel", str(guest("hello")), "--append", f"exit={status}"
    )
    assert r.status == status, r.err
    assert "hello, world" in r.out
    assert f'cmdline: "exit={status}"' in r.out


def test_aout_kludge_image_boots(backend: str, guest) -> None:  # noqa: ANN001
    r = rrvmm(
        "run", "--backend", backend, "--kernel", str(guest("hello-aout")), "--append", "exit=5"
    )
    assert r.status == 5, r.err
    assert "hello, world" in r.out


def test_multiboot_memory_info_follows_memory_option(backend: str, guest) -> None:  # noqa: ANN001
    r = rrvmm("run", "--backend", backend, "--kernel", str(guest("hello")), "--memory", "64M")
    assert "mem_upper=64512 KiB" in r.out


def test_timer_interrupts_through_the_pic(backend: str, guest) -> None:  # noqa: ANN001
    r = rrvmm("run", "--backend", backend, "--kernel", str(guest("timer")))
    assert r.status == 0, r.err
    assert "pit latch ok" in r.out and "pit read-back ok" in r.out
    assert r.out.endswith("ticks=20\n")


def test_rtc_and_cmos_memory(backend: str, guest) -> None:  # noqa: ANN001
    r = rrvmm("run", "--backend", backend, "--kernel", str(guest("rtc")), "--memory", "128M")
    assert r.status == 0, r.err
    assert "rtc ok" in r.out
    assert "extended memory: 130048 KB" in r.out


def test_guest_handles_its_own_exceptions(backend: str, guest) -> None:  # noqa: ANN001
    r = rrvmm("run", "--backend", backend, "--kernel", str(guest("exceptions")))
    assert r.status == 0, r.err
    assert "#BP vector=3 err=0x0 rip ok" in r.out
    assert "#PF vector=14 err=0x2 cr2=0x40001234 rip ok" in r.out
    assert r.out.endswith("exceptions: 6/6 as expected\n")


def test_uart_probe_and_rx_interrupts(backend: str, guest) -> None:  # noqa: ANN001
    r = rrvmm_after(
        "run", "--backend", backend, "--kernel", str(guest("uart")), "--append", "lines=2",
        wait_for=b"ready\n", send=b"one\ntwo\n",
    )  # fmt: skip
    assert r.status == 0, r.err
    assert "fifo: 16550A" in r.out and "loopback data ok" in r.out
    assert "got: one\ngot: two\n" in r.out


def test_echo_guest_line_by_line(backend: str, guest) -> None:  # noqa: ANN001
    r = rrvmm(
        "run", "--backend", backend, "--kernel", str(guest("echo")), stdin=b"alpha\nbeta\nquit\n"
    )
    assert r.status == 0, r.err
    assert "> alpha\n> beta\n" in r.out


def test_triple_fault_is_reported(backend: str, guest) -> None:  # noqa: ANN001
    r = rrvmm("run", "--backend", backend, "--kernel", str(guest("triplefault")))
    assert r.status == 70
    assert "about to triple fault" in r.out
    assert r.err.strip().startswith("rrvmm: guest crashed: triple fault")
    assert len(r.err.strip().splitlines()) == 1


def test_guest_waiting_for_input_that_never_comes(backend: str, guest) -> None:  # noqa: ANN001
    r = rrvmm("run", "--backend", backend, "--kernel", str(guest("echo")), stdin=None)
    assert r.status == 71
    assert "can never wake up" in r.err


def test_interrupt_heavy_guest_finishes(backend: str, guest) -> None:  # noqa: ANN001
    r = rrvmm("run", "--backend", backend, "--kernel", str(guest("irqhash")), "--append", "hz=1000")
    assert r.status == 0, r.err
    assert "irqhash ticks=" in r.out


def test_planted_corruption_guest_panics(backend: str, guest) -> None:  # noqa: ANN001
    r = rrvmm("run", "--backend", backend, "--kernel", str(guest("corrupt")))
    assert r.status == 3
    assert "PANIC: guard corrupted" in r.out
