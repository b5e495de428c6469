"""Help texts, output and store handling a new user meets first (issue 18)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from rrvmm.cli.backend_choice import choose_backend, kvm_is_emulated
from rrvmm_cli import rrvmm

PVM_FLAGS = frozenset("fpu vme pae hypervisor lm sse2".split())  # kvm_pvm: no vmx, no svm
VMX_FLAGS = PVM_FLAGS | {"vmx"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"RRVMM_TRACE_DIR": str(tmp_path / "store")}


@pytest.mark.parametrize("verb", ["run", "record", "replay", "trace", "pack", "ls", "rm"])
def test_every_verb_describes_itself(verb: str) -> None:
    short = rrvmm(verb, "--help").out
    usage, _, rest = short.partition("\n\n")
    assert usage.startswith("usage: rrvmm") and rest.strip()
    assert not rest.lstrip().startswith(("positional arguments", "options"))  # a description


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("replay",), "trace file, or a name in the trace store"),
        (("trace", "info"), "trace file, or a name in the trace store"),
        (("trace", "timeline"), "trace file, or a name in the trace store"),
        (("trace", "diff"), "the second trace, compared with A"),
    ],
)
def test_positionals_have_help(args: tuple[str, ...], words: str) -> None:
    assert words in " ".join(rrvmm(*args, "--help").out.split())


def test_verbose_after_the_verb(guest, env: dict[str, str]) -> None:  # noqa: ANN001
    before = rrvmm("-v", "run", "--backend", "soft", "--kernel", str(guest("hello")), env=env)
    after = rrvmm("run", "-v", "--backend", "soft", "--kernel", str(guest("hello")), env=env)
    assert before.status == after.status == 0, after.err
    assert "isa-debug-exit" in after.err and "isa-debug-exit" in before.err  # verbose end line
    quiet = rrvmm("run", "--backend", "soft", "--kernel", str(guest("hello")), env=env)
    assert "isa-debug-exit" not in quiet.err


def test_record_o_into_a_missing_directory_is_an_error(tmp_path: Path, guest) -> None:  # noqa: ANN001
    out = tmp_path / "no" / "such" / "x.rrt"
    r = rrvmm("record", "--backend", "soft", "--kernel", str(guest("hello")), "-o", str(out))
    assert r.status == 66 and len(r.err.strip().splitlines()) == 1 and "does not exist" in r.err
    assert not (tmp_path / "no").exists()


def test_store_names_latest_rm(guest, env: dict[str, str]) -> None:  # noqa: ANN001
    store = Path(env["RRVMM_TRACE_DIR"])
    r = rrvmm("replay", env=env)
    assert r.status == 66 and "no traces in" in r.err
    for code in (0, 3, 5):
        r = rrvmm("record", "--backend", "soft", "--kernel", str(guest("hello")),
                  "--append", f"exit={code}", env=env)  # fmt: skip
        assert r.status == code, r.err
    assert sorted(p.name for p in store.glob("*.rrt")) == [f"hello-{i}.rrt" for i in range(3)]
    r = rrvmm("replay", env=env)  # the latest
    assert r.status == 0 and 'cmdline: "exit=5"' in r.out
    r = rrvmm("replay", "hello-1", env=env)  # a bare name
    assert r.status == 0 and 'cmdline: "exit=3"' in r.out
    assert rrvmm("trace", "info", "hello-0", env=env).status == 0
    rows = json.loads(rrvmm("ls", "--json", env=env).out)["traces"]
    assert [row["name"] for row in rows] == ["hello-0", "hello-1", "hello-2"]
    assert [row["latest"] for row in rows] == [False, False, True]
    assert [row["status"] for row in rows] == [0, 3, 5]
    assert all(row["guest_ns"] > 0 and row["exits"] > 0 and not row["packed"] for row in rows)
    assert rrvmm("rm", "hello-2", env=env).status == 0
    assert os.readlink(store / "latest-trace") == "hello-1.rrt"  # the newest left
    r = rrvmm("record", "--backend", "soft", "--kernel", str(guest("hello")), env=env)
    assert r.status == 0 and (store / "hello-2.rrt").is_file()  # after the highest left
    r = rrvmm("rm", "nonesuch", env=env)
    assert r.status == 66 and "no such trace in the store" in r.err
    outside = Path(env["RRVMM_TRACE_DIR"]).parent / "outside.rrt"
    (store / "hello-0.rrt").rename(outside)
    r = rrvmm("rm", str(outside), env=env)
    assert r.status == 66 and outside.exists()  # never outside the store


def test_trace_info_reads_as_text(tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace = tmp_path / "t.rrt"
    r = rrvmm("record", "--backend", "soft", "--kernel", str(guest("hello")), "-o", str(trace))
    assert r.status == 0, r.err
    text = rrvmm("trace", "info", str(trace)).out
    assert "{" not in text and "'" not in text  # no Python dicts
    assert "128 MiB RAM" in text and "KiB" in text
    lines = dict(line.split(None, 1) for line in text.splitlines() if line.strip())
    assert lines["recorded"].endswith("on the soft CPU")
    assert lines["ended"].startswith("status 0:")


def test_soft_trace_refused_on_kvm(tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace = tmp_path / "t.rrt"
    assert rrvmm("record", "--backend", "soft", "--kernel", str(guest("hello")),
                 "-o", str(trace)).status == 0  # fmt: skip
    r = rrvmm("replay", str(trace), "--backend", "kvm")
    assert r.status == 64 and len(r.err.strip().splitlines()) == 1
    assert "recorded on the software CPU" in r.err
    assert rrvmm("replay", str(trace), "--backend", "auto").status == 0  # auto: its own


def _bzimage() -> bytes:
    data = bytearray(0x300)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x206, 0x020F)
    return bytes(data)


def test_linux_on_an_emulating_kvm_gets_the_software_cpu(capsys: pytest.CaptureFixture) -> None:
    assert kvm_is_emulated(PVM_FLAGS) and not kvm_is_emulated(VMX_FLAGS)
    assert not kvm_is_emulated(frozenset())  # unknown host: no guess
    assert choose_backend("auto", _bzimage(), PVM_FLAGS) == "soft"
    assert "using the software CPU" in capsys.readouterr().err
    assert choose_backend("kvm", _bzimage(), PVM_FLAGS) == "kvm"  # obeyed, with a warning
    assert "--backend soft" in capsys.readouterr().err
    assert choose_backend("auto", _bzimage(), VMX_FLAGS) == "auto"
    assert choose_backend("auto", b"\x7fELF" + bytes(0x300), PVM_FLAGS) == "auto"  # not Linux
    assert capsys.readouterr().err == ""


def test_trace_extract_needs_a_packed_trace_and_a_directory(tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace = tmp_path / "t.rrt"
    assert rrvmm("record", "--backend", "soft", "--kernel", str(guest("hello")),
                 "-o", str(trace)).status == 0  # fmt: skip
    r = rrvmm("trace", "extract", str(trace))
    assert r.status == 64 and "--symbols DIR" in r.err
    r = rrvmm("trace", "extract", str(trace), "--symbols", str(tmp_path / "nope"))
    assert r.status == 66 and "not a directory" in r.err
    r = rrvmm("trace", "extract", str(trace), "--symbols", str(tmp_path))
    assert r.status == 66 and "carries none" in r.err and len(r.err.strip().splitlines()) == 1
