"""Bad input: one line on stderr, a distinct status, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrvmm_cli import rrvmm


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_missing_kernel_file(tmp_path: Path) -> None:
    r = rrvmm("run", "--kernel", str(tmp_path / "nope.mb"))
    assert r.status == 66
    assert "not found" in _one_line(r.err)


def test_file_that_is_no_kernel(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("just some text\n" * 100)
    r = rrvmm("run", "--kernel", str(f))
    assert r.status == 65
    assert "neither a multiboot kernel nor a Linux bzImage" in _one_line(r.err)


def test_directory_as_kernel(tmp_path: Path) -> None:
    r = rrvmm("run", "--kernel", str(tmp_path))
    assert r.status == 66
    _one_line(r.err)


@pytest.mark.kvm
def test_memory_too_small(guest) -> None:  # noqa: ANN001
    r = rrvmm("run", "--kernel", str(guest("hello")), "--memory", "1M")
    assert r.status == 67
    assert "too small" in _one_line(r.err)


def test_memory_not_a_size() -> None:
    r = rrvmm("run", "--memory", "lots")
    assert r.status == 64
    assert "--memory" in _one_line(r.err)


def test_kvm_device_missing(guest) -> None:  # noqa: ANN001
    r = rrvmm(
        "run", "--backend", "kvm", "--kernel", str(guest("hello")),
        env={"RRVMM_KVM_DEVICE": "/nonexistent/kvm"},
    )  # fmt: skip
    assert r.status == 69
    assert "does not exist" in _one_line(r.err)


def test_kvm_device_not_kvm(tmp_path: Path, guest) -> None:  # noqa: ANN001
    fake = tmp_path / "kvm"
    fake.write_bytes(b"")
    r = rrvmm(
        "run", "--backend", "kvm", "--kernel", str(guest("hello")),
        env={"RRVMM_KVM_DEVICE": str(fake)},
    )  # fmt: skip
    assert r.status == 69
    assert "KVM is not usable" in _one_line(r.err)


def test_auto_falls_back_to_the_software_backend(guest) -> None:  # noqa: ANN001
    r = rrvmm("run", "--kernel", str(guest("hello")), env={"RRVMM_KVM_DEVICE": "/nonexistent/kvm"})
    assert r.status == 0 and "hello, world" in r.out
    assert "using the software backend" in _one_line(r.err)
