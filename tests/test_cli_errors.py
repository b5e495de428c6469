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


@pytest.mark.parametrize("image", ["kernel", "initrd", "disk"])
def test_record_refuses_to_overwrite_an_image_it_uses(tmp_path: Path, guest, image: str) -> None:  # noqa: ANN001
    kernel = tmp_path / "k.mb"
    kernel.write_bytes(guest("hello").read_bytes())
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"module bytes\n" * 64)
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 16))
    target = {"kernel": kernel, "initrd": initrd, "disk": disk}[image]
    link = tmp_path / "another-name.rrt"
    link.symlink_to(target)  # the same file by another name is refused too
    before = target.read_bytes()
    for out in (target, link):
        r = rrvmm(
            "record", "--backend", "soft", "--kernel", str(kernel), "--initrd", str(initrd),
            "--disk", str(disk), "-o", str(out),
        )  # fmt: skip
        assert r.status == 64, r.err
        assert f"is the {image} image" in _one_line(r.err)
        assert target.read_bytes() == before


def test_non_utf8_command_line(guest) -> None:  # noqa: ANN001
    import os

    r = rrvmm("run", "--kernel", str(guest("hello")), "--append", os.fsdecode(b"x=\xff"))
    assert r.status == 64
    assert "not valid UTF-8" in _one_line(r.err)


@pytest.mark.parametrize(
    ("size", "says"),
    [
        ("0", "needs some RAM"),
        ("1001K", "4K pages"),
        ("65G", "more than 64G"),
        ("99999999999999999999G", "more than 64G"),
    ],
)
def test_memory_sizes_refused_with_the_limit(size: str, says: str) -> None:
    r = rrvmm("run", "--backend", "soft", "--memory", size)
    assert r.status == 64, r.err
    assert says in _one_line(r.err)


def test_memory_beyond_the_host_names_its_limit() -> None:
    from rrvmm.cli.options import MAX_MEMORY, host_memory_limit

    limit = host_memory_limit()
    if limit is None or limit >= MAX_MEMORY:
        pytest.skip("this host could map the largest guest rrvmm allows")
    size = f"{(limit >> 30) + 1}G"
    for backend in ("soft", "kvm"):
        r = rrvmm("run", "--backend", backend, "--memory", size)
        assert r.status == 64, r.err
        assert "more than this host can give" in _one_line(r.err)
        assert f"{limit / (1 << 30):.1f}G" in r.err


def test_guest_ram_above_4g_sits_above_the_pci_hole(backend: str, guest) -> None:  # noqa: ANN001
    """5G: 3G below the hole, 2G from 4G up, in the multiboot memory map the guest prints."""
    r = rrvmm("run", "--backend", backend, "--kernel", str(guest("hello")), "--memory", "5G")
    assert r.status == 0, r.err
    assert "base=0x0000000100000000 len=0x0000000080000000 type=1" in r.out, r.out


@pytest.mark.parametrize("n", ["0", "-1"])
def test_checkpoint_every_must_be_positive(tmp_path: Path, n: str) -> None:
    r = rrvmm("replay", str(tmp_path / "t.rrt"), "--console", "--checkpoint-every", n)
    assert r.status == 64
    assert "--checkpoint-every" in _one_line(r.err)
