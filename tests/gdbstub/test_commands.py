"""Every packet handler on bytes alone, against the scripted fake target."""

from __future__ import annotations

import pytest
from gdbstub_fake import BEGIN_PC, END_PC, FakeTarget

from rrvmm.gdbstub import regs
from rrvmm.gdbstub.commands import (
    COMMANDS,
    QSUPPORTED,
    GdbCommands,
    Resume,
    find_command,
    parse_args,
)
from rrvmm.gdbstub.framing import escape, hexlify
from rrvmm.target import Stop, StopKind, TargetError, WatchKind

PC = b"10:%s;" % regs.encode_register(regs.PC_REGNUM, BEGIN_PC)  # b"10:0011000000000000;"
G_LEN = 2 * sum(r.size for r in regs.REGISTERS)


def make(**kw: bool) -> tuple[GdbCommands, FakeTarget]:
    target = FakeTarget(**kw)
    return GdbCommands(target), target


def pc_field(pc: int) -> bytes:
    return b"10:%s;" % pc.to_bytes(8, "little").hex().encode()


# --- the table itself ----------------------------------------------------------------------


def test_every_handler_exists() -> None:
    for cmd in COMMANDS:
        assert callable(getattr(GdbCommands, cmd.handler)), cmd


def test_names_are_unique() -> None:
    names = [c.name for c in COMMANDS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("payload", "handler"),
    [
        (b"qC", "q_current_thread"),
        (b"qCRC:0,4", None),  # not qC
        (b"qSupported", "q_supported"),
        (b"qSupported:swbreak+", "q_supported"),
        (b"qSupportedX", None),
        (b"vCont?", "v_cont_query"),
        (b"vCont;c", "v_cont"),
        (b"vContX", None),
        (b"bc", "reverse_cont"),
        (b"bs", "reverse_step"),
        (b"b", None),
        (b"qAttached:1", "q_attached"),
        (b"m0,1", "read_memory"),
        (b"", None),
        (b"vFile:setfs:0", None),
    ],
)
def test_find_command(payload: bytes, handler: str | None) -> None:
    found = find_command(payload)
    assert (found[0].handler if found else None) == handler


@pytest.mark.parametrize(
    ("schema", "data", "expected"),
    [
        ("x,x", b"1000,4", [0x1000, 4]),
        ("x,x:h", b"10,2:abcd", [0x10, 2, b"\xab\xcd"]),
        ("x,x:b", b"10,2:}]a", [0x10, 2, b"}a"]),
        ("x=h", b"10=00ff", [0x10, b"\x00\xff"]),
        ("x?", b"", []),
        ("x?", b"1f", [0x1F]),
        ("x;?x", b"05", [5]),
        ("x;?x", b"05;1000", [5, 0x1000]),
        (":?s", b"", []),
        (":?s", b":a+;b-", [b"a+;b-"]),
        ("x,x,x*", b"0,1000,1;X3,220100", [0, 0x1000, 1]),
        ("t", b"-1", [-1]),
        ("*", b"anything", []),
    ],
)
def test_parse_args(schema: str, data: bytes, expected: list[object]) -> None:
    assert parse_args(schema, data) == expected


@pytest.mark.parametrize(
    ("schema", "data"),
    [
        ("x,x", b"1000"),
        ("x,x", b"1000,"),
        ("x,x", b",4"),
        ("x,x", b"10g0,4"),
        ("x,x", b"1000,4,"),
        ("x,x:h", b"10,2:abc"),
        ("x,x:h", b"10,2:zz"),
        ("x,x:b", b"10,2:ab}"),
        ("x", b""),
        ("t", b"-2"),
    ],
)
def test_parse_args_rejects(schema: str, data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_args(schema, data)


# --- simple replies, table-driven ----------------------------------------------------------

SIMPLE = [
    (b"qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386", [QSUPPORTED]),
    (b"qSupported", [QSUPPORTED]),
    (b"QStartNoAckMode", [b"OK"]),
    (b"?", [b"T05thread:1;" + PC]),
    (b"qfThreadInfo", [b"m1"]),
    (b"qsThreadInfo", [b"l"]),
    (b"qC", [b"QC1"]),
    (b"Hg0", [b"OK"]),
    (b"Hg1", [b"OK"]),
    (b"Hc-1", [b"OK"]),
    (b"Hc0", [b"OK"]),
    (b"Hg2", [b"E02"]),
    (b"Hx1", [b"E01"]),
    (b"H", [b"E01"]),
    (b"Hgzz", [b"E01"]),
    (b"T1", [b"OK"]),
    (b"T2", [b"E02"]),
    (b"T", [b"E01"]),
    (b"qAttached", [b"1"]),
    (b"qAttached:1", [b"1"]),
    (b"qTStatus", [b""]),
    (b"qOffsets", [b""]),
    (b"vMustReplyEmpty", [b""]),
    (b"vCont?", [b"vCont;c;C;s;S"]),
    (b"qSymbol::", [b""]),
    (b"qFooBar", [b""]),
    (b"vKill;1", [b""]),
    (b"!", [b""]),
    (b"", [b""]),
    (b"qCRC:0,4", [b""]),
    (b"k", []),
    (b"D", [b"OK"]),
    (b"D;1", [b"OK"]),
    # registers
    (b"p10", [regs.encode_register(16, BEGIN_PC)]),
    (b"p0", [b"1111111111111111"]),
    (b"p11", [b"46020000"]),  # eflags is 32-bit
    (b"p12", [b"08000000"]),  # cs
    (b"p18", [b"5ebaf50000000000"]),  # fs_base
    (b"p1d", [b"0010000000000000"]),  # cr3
    (b"p20", [b"010d000000000000"]),  # efer
    (b"p21", [b"00" * 10]),  # st0: 80 bits of zeros
    (b"p31", [b"00" * 16]),  # xmm0
    (b"p41", [b"00000000"]),  # mxcsr
    (b"p42", [b"E02"]),
    (b"p", [b"E01"]),
    (b"pzz", [b"E01"]),
    (b"P21=" + b"00" * 10, [b"OK"]),  # unchanged: fine even read-only
    (b"P10=" + regs.encode_register(16, BEGIN_PC), [b"OK"]),  # unchanged rip
    (b"P0=0500000000000000", [b"E.replay is read-only"]),  # read-only replay: says why
    (b"P0=05", [b"E01"]),  # wrong size
    (b"P42=00000000", [b"E02"]),
    (b"P0", [b"E01"]),
    (b"G00", [b"E01"]),
    # memory
    (b"m2000,8", [b"0010000000000000"]),
    (b"m2000,10", [b"00100000000000000110000000000000"]),
    (b"m1100,4", [b"90909090"]),
    (b"m0,4", [b"E03"]),
    (b"m2ff8,10", [b"90" * 8]),  # crosses into unmapped 0x3000: the mapped head
    (b"m3000,1", [b"E03"]),
    (b"m2000", [b"E01"]),
    (b"m,8", [b"E01"]),
    (b"mxyz,8", [b"E01"]),
    (b"M2000,2:abcd", [b"E.replay is read-only"]),  # read-only replay
    (b"M2000,3:abcd", [b"E01"]),
    (b"M2000,2:abc", [b"E01"]),
    (b"X2000,0:", [b"OK"]),  # gdb's binary-download probe
    (b"X2000,1:a", [b"E.replay is read-only"]),
    (b"X2000,2:a", [b"E01"]),
    (b"X2000,1:}", [b"E01"]),
    # points
    (b"Z0,1150,1", [b"OK"]),
    (b"z0,1150,1", [b"OK"]),
    (b"Z1,1150,1", [b"OK"]),
    (b"Z2,2000,8", [b"OK"]),
    (b"Z3,2000,4", [b"OK"]),
    (b"Z4,2000,1", [b"OK"]),
    (b"z4,2000,1", [b"OK"]),
    (b"Z0,1150,1;X3,220100", [b"OK"]),
    (b"Z5,1150,1", [b""]),
    (b"Z2,2000,0", [b"E01"]),
    (b"Z0,1150", [b"E01"]),
    (b"Z", [b"E01"]),
    # qXfer errors
    (b"qXfer:features:read:nope.xml:0,100", [b"E00"]),
    (b"qXfer:features:read:target.xml:0", [b"E01"]),
    (b"qXfer:features:read:target.xml", [b"E01"]),
    (b"qXfer:features:read:target.xml:ffffff,10", [b"E01"]),
    # monitor
    (b"qRcmd,", [b"OK"]),
    (b"qRcmd,6869", [b"O" + hexlify(b"ran 'hi'\n"), b"OK"]),
    (b"qRcmd,6661696c", [b"O" + hexlify(b"error: no such thing\n"), b"OK"]),
    (b"qRcmd,6", [b"E01"]),
    (b"qRcmd,zz", [b"E01"]),
]


@pytest.mark.parametrize(("payload", "replies"), SIMPLE, ids=[repr(p[0]) for p in SIMPLE])
def test_simple(payload: bytes, replies: list[bytes]) -> None:
    stub, _ = make()
    assert stub.handle(payload) == replies


def test_no_ack_mode_response() -> None:
    stub, _ = make()
    resp = stub.dispatch(b"QStartNoAckMode")
    assert resp.no_ack and resp.packets == [b"OK"] and stub.no_ack


@pytest.mark.parametrize(("payload", "close"), [(b"D", True), (b"k", True), (b"?", False)])
def test_close(payload: bytes, close: bool) -> None:
    stub, _ = make()
    assert stub.dispatch(payload).close is close


# --- registers -----------------------------------------------------------------------------


def test_g_layout() -> None:
    stub, target = make()
    [reply] = stub.handle(b"g")
    assert len(reply) == G_LEN == 1216
    assert reply.startswith(b"1111111111111111" + b"2222222222222222")
    assert reply[16 * 16 : 17 * 16] == b"0011000000000000"  # rip after 16 gprs
    assert reply[17 * 16 : 17 * 16 + 8] == b"46020000"  # eflags
    assert regs.decode_registers(reply) == {
        r.name: target.registers.get(r.name, 0) for r in regs.REGISTERS
    }


def test_g_missing_and_negative_registers() -> None:
    stub, target = make()
    del target.registers["cr8"]
    target.registers["rax"] = -1
    values = regs.decode_registers(stub.handle(b"g")[0])
    assert values["cr8"] == 0
    assert values["rax"] == (1 << 64) - 1


def test_G_echo_is_ok_when_read_only() -> None:
    stub, target = make()
    before = dict(target.registers)
    [g] = stub.handle(b"g")
    assert stub.handle(b"G" + g) == [b"OK"]
    assert target.registers == before


def test_G_change_read_only_fails() -> None:
    stub, _ = make()
    [g] = stub.handle(b"g")
    assert stub.handle(b"G" + b"0000000000000000" + g[16:]) == [b"E.replay is read-only"]


def test_G_change_writable() -> None:
    stub, target = make(writable=True)
    [g] = stub.handle(b"g")
    assert stub.handle(b"G" + b"0500000000000000" + g[16:]) == [b"OK"]
    assert target.registers["rax"] == 5
    assert target.registers["rbx"] == 0x2222222222222222


def test_G_nonzero_register_the_target_lacks() -> None:
    stub, _ = make(writable=True)
    values = regs.decode_registers(stub.handle(b"g")[0])
    values["xmm3"] = 7
    text = b"".join(regs.encode_register(i, values[r.name]) for i, r in enumerate(regs.REGISTERS))
    assert stub.handle(b"G" + text) == [b"E.xmm3 is not writable here"]


def test_P_writable() -> None:
    stub, target = make(writable=True)
    assert stub.handle(b"P11=02000000") == [b"OK"]
    assert target.registers["eflags"] == 2
    assert stub.handle(b"p11") == [b"02000000"]


# --- memory --------------------------------------------------------------------------------


def test_M_and_X_writable() -> None:
    stub, target = make(writable=True)
    assert stub.handle(b"M2000,2:abcd") == [b"OK"]
    assert target.read_memory(0x2000, 2) == b"\xab\xcd"
    data = bytes([0x7D, 0x23, 0x24, 0x2A, 0x03, 0x00])
    assert stub.handle(b"X2008,6:" + escape(data)) == [b"OK"]
    assert target.read_memory(0x2008, 6) == data


def test_m_capped_at_packet_size() -> None:
    stub, _ = make()
    [reply] = stub.handle(b"m1000,2000")
    assert len(reply) <= stub.packet_size - 8
    assert set(reply) <= set(b"0123456789abcdef")


# --- qXfer ---------------------------------------------------------------------------------


def test_qxfer_whole_document() -> None:
    stub, _ = make()
    [reply] = stub.handle(b"qXfer:features:read:target.xml:0,ffff")
    assert reply[:1] == b"l"
    assert reply[1:] == escape(regs.XML_FILES["target.xml"])


@pytest.mark.parametrize("chunk", [1, 0x7F, 0x1000])
def test_qxfer_chunks_reassemble(chunk: int) -> None:
    stub, _ = make()
    doc = b""
    while True:
        [reply] = stub.handle(b"qXfer:features:read:target.xml:%x,%x" % (len(doc), chunk))
        assert reply[:1] in (b"m", b"l")
        doc += reply[1:]
        if reply[:1] == b"l":
            break
    assert doc == regs.XML_FILES["target.xml"]


def test_qxfer_at_end() -> None:
    stub, _ = make()
    size = len(regs.XML_FILES["target.xml"])
    assert stub.handle(b"qXfer:features:read:target.xml:%x,10" % size) == [b"l"]


# --- execution and stop replies ------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "resume"),
    [
        (b"c", Resume()),
        (b"s", Resume(step=True)),
        (b"C05", Resume()),
        (b"S05", Resume(step=True)),
        (b"bc", Resume(reverse=True)),
        (b"bs", Resume(reverse=True, step=True)),
        (b"vCont;c", Resume()),
        (b"vCont;s", Resume(step=True)),
        (b"vCont;s:1", Resume(step=True)),
        (b"vCont;s:1;c", Resume(step=True)),
        (b"vCont;c:-1", Resume()),
        (b"vCont;C05:1", Resume()),
        (b"vCont;S0b", Resume(step=True)),
        (b"vCont;s:2;c", Resume()),  # the step is for a thread that does not exist
    ],
)
def test_resume_packets(payload: bytes, resume: Resume) -> None:
    stub, _ = make()
    resp = stub.dispatch(payload)
    assert resp.resume == resume and resp.packets == []


@pytest.mark.parametrize(
    "payload",
    [b"vCont;", b"vCont;x", b"vCont;c:2", b"vCont;cc", b"vCont;C", b"vCont;s:zz", b"vCont;t"],
)
def test_bad_vcont(payload: bytes) -> None:
    stub, _ = make()
    assert stub.handle(payload) == [b"E01"]


@pytest.mark.parametrize("payload", [b"c1000", b"s1000"])
def test_resume_at_address_refused(payload: bytes) -> None:
    stub, target = make()
    assert stub.handle(payload) == [b"E03"]
    assert target.resumes == []


def test_step_and_reverse_step() -> None:
    stub, target = make()
    assert stub.handle(b"vCont;s:1") == [b"T05thread:1;" + pc_field(BEGIN_PC + 1)]
    assert stub.handle(b"bs") == [b"T05thread:1;" + pc_field(BEGIN_PC)]
    assert stub.handle(b"bs") == [b"T05replaylog:begin;thread:1;" + pc_field(BEGIN_PC)]
    assert target.resumes == [(False, True), (True, True), (True, True)]


def test_continue_to_end_and_back() -> None:
    stub, _ = make()
    assert stub.handle(b"c") == [b"T05replaylog:end;thread:1;" + pc_field(END_PC)]
    assert stub.handle(b"?") == [b"T05replaylog:end;thread:1;" + pc_field(END_PC)]
    assert stub.handle(b"bc") == [b"T05replaylog:begin;thread:1;" + pc_field(BEGIN_PC)]


def test_breakpoints_reach_target() -> None:
    stub, target = make()
    stub.handle(b"Z0,1150,1")
    stub.handle(b"Z1,1160,1")
    assert target.breakpoints == {(0x1150, False), (0x1160, True)}
    stub.handle(b"z1,1160,1")
    assert target.breakpoints == {(0x1150, False)}


def test_watchpoints_reach_target() -> None:
    stub, target = make()
    for p in (b"Z2,2000,8", b"Z3,2008,4", b"Z4,2010,2"):
        assert stub.handle(p) == [b"OK"]
    assert target.watchpoints == {
        (0x2000, 8, WatchKind.WRITE),
        (0x2008, 4, WatchKind.READ),
        (0x2010, 2, WatchKind.ACCESS),
    }
    stub.handle(b"z3,2008,4")
    assert (0x2008, 4, WatchKind.READ) not in target.watchpoints


def test_breakpoint_stop_reason_only_when_gdb_asked() -> None:
    stub, _ = make()
    stub.handle(b"Z0,1150,1")
    assert stub.handle(b"c") == [b"T05thread:1;" + pc_field(0x1150)]
    stub, _ = make()
    stub.handle(b"qSupported:swbreak+;hwbreak+")
    stub.handle(b"Z0,1150,1")
    stub.handle(b"Z1,1160,1")
    assert stub.handle(b"c") == [b"T05swbreak:;thread:1;" + pc_field(0x1150)]
    assert stub.handle(b"c") == [b"T05hwbreak:;thread:1;" + pc_field(0x1160)]
    assert stub.handle(b"bc") == [b"T05swbreak:;thread:1;" + pc_field(0x1150)]


STOPS = [
    (Stop(StopKind.STEP), b"T05thread:1;" + PC),
    (Stop(StopKind.BREAKPOINT, address=0x1100), b"T05swbreak:;thread:1;" + PC),
    (Stop(StopKind.BREAKPOINT, address=0x1100, hardware=True), b"T05hwbreak:;thread:1;" + PC),
    (Stop(StopKind.WATCHPOINT, 0x2000, WatchKind.WRITE), b"T05watch:2000;thread:1;" + PC),
    (Stop(StopKind.WATCHPOINT, 0x2008, WatchKind.READ), b"T05rwatch:2008;thread:1;" + PC),
    (Stop(StopKind.WATCHPOINT, 0x2010, WatchKind.ACCESS), b"T05awatch:2010;thread:1;" + PC),
    (Stop(StopKind.WATCHPOINT, 0xFFFF800000001000), b"T05watch:ffff800000001000;thread:1;" + PC),
    (Stop(StopKind.INTERRUPTED), b"T02thread:1;" + PC),
    (Stop(StopKind.REPLAY_BEGIN), b"T05replaylog:begin;thread:1;" + PC),
    (Stop(StopKind.REPLAY_END), b"T05replaylog:end;thread:1;" + PC),
    (Stop(StopKind.EXITED), b"W00"),
    (Stop(StopKind.EXITED, status=42), b"W2a"),
]


@pytest.mark.parametrize(("stop", "reply"), STOPS, ids=[s[1].decode() for s in STOPS])
def test_stop_replies(stop: Stop, reply: bytes) -> None:
    stub, target = make()
    stub.handle(b"qSupported:swbreak+;hwbreak+")
    target.script.append(stop)
    assert stub.handle(b"vCont;c") == [reply]
    assert stub.handle(b"?") == [reply]


def test_scripted_watch_moves_pc() -> None:
    stub, target = make()

    def hit(t: FakeTarget) -> Stop:
        t.registers["rip"] = 0x1234
        return Stop(StopKind.WATCHPOINT, 0x2000, WatchKind.WRITE)

    target.script.append(hit)
    assert stub.handle(b"c") == [b"T05watch:2000;thread:1;" + pc_field(0x1234)]


def test_stop_reply_without_registers() -> None:
    stub, target = make()

    def broken() -> dict[str, int]:
        raise TargetError("gone")

    target.read_registers = broken  # type: ignore[method-assign]
    target.script.append(Stop(StopKind.STEP))
    assert stub.handle(b"s") == [b"T05thread:1;"]


def test_resume_failure_is_an_error_reply() -> None:
    stub, target = make()

    def boom(t: FakeTarget) -> Stop:
        raise TargetError("diverged")

    target.script.append(boom)
    assert stub.handle(b"c") == [b"E03"]
    target.script.append(lambda t: 1 // 0)  # type: ignore[arg-type,return-value]
    assert stub.handle(b"c") == [b"E04"]
    assert stub.handle(b"?") == [b"T05thread:1;" + PC]


def test_unexpected_target_exception_is_e04() -> None:
    stub, target = make()

    def boom(address: int, length: int) -> bytes:
        raise RuntimeError("bug")

    target.read_memory = boom  # type: ignore[method-assign]
    assert stub.handle(b"m2000,8") == [b"E04"]
    assert stub.handle(b"?") == [b"T05thread:1;" + PC]


def test_monitor_long_output_is_split() -> None:
    stub, target = make()
    target.monitor = lambda command: "x" * 20000  # type: ignore[method-assign]
    replies = stub.handle(b"qRcmd," + hexlify(b"big"))
    assert replies[-1] == b"OK"
    assert all(r[:1] == b"O" and len(r) <= stub.packet_size for r in replies[:-1])
    assert b"".join(bytes.fromhex(r[1:].decode()) for r in replies[:-1]) == b"x" * 20000


def test_qsupported_records_client_features() -> None:
    stub, _ = make()
    stub.handle(b"qSupported:multiprocess+;swbreak+;hwbreak-;xmlRegisters=i386")
    assert stub.client_features == {b"multiprocess", b"swbreak"}


def test_qsupported_reply_lists_features() -> None:
    features = dict(
        f.split(b"=") if b"=" in f else (f[:-1], f[-1:]) for f in QSUPPORTED.split(b";")
    )
    assert int(features[b"PacketSize"], 16) >= 0x1000
    for name in (
        b"qXfer:features:read",
        b"QStartNoAckMode",
        b"ReverseStep",
        b"ReverseContinue",
        b"swbreak",
        b"hwbreak",
        b"vContSupported",
    ):
        assert features[name] == b"+", name
