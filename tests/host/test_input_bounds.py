"""Host input queues stay bounded when the guest does not drain them (issue 17).

A UDP port drops what does not fit, counting it and warning once; piped serial input is
read no further ahead than MAX_PENDING_INPUT, and nothing of it is lost.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import pytest

from rrvmm.host.terminal import MAX_PENDING_INPUT, SerialHost
from rrvmm.host.udp import MAX_QUEUED_BYTES, MAX_QUEUED_DATAGRAMS, UdpPort


def _wait_for(cond, timeout: float = 10.0) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.0005)


def test_udp_port_drops_and_counts_what_an_undrained_guest_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = UdpPort("127.0.0.1", 0, name="--net")
    port.start(lambda: None)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    frame = b"x" * 8192
    sent = (MAX_QUEUED_BYTES // len(frame)) + 200
    try:
        with caplog.at_level(logging.WARNING, logger="rrvmm"):
            for i in range(sent):  # one at a time: the kernel's buffer must not drop any
                sender.sendto(frame, port.address)
                _wait_for(lambda i=i: port.dropped + len(port._pending) == i + 1)
            queued = len(port._pending)
            assert queued * len(frame) <= MAX_QUEUED_BYTES
            assert queued <= MAX_QUEUED_DATAGRAMS
            assert port.dropped >= 1 and port.dropped_bytes == port.dropped * len(frame)
            # the guest takes one: room for one more, which is queued again
            assert port.take_frame() == frame
            before = port.dropped
            sender.sendto(frame, port.address)
            _wait_for(lambda: len(port._pending) == queued)
            assert port.dropped == before
    finally:
        sender.close()
        port.close()
    warnings = [r.getMessage() for r in caplog.records if "--net" in r.getMessage()]
    assert len(warnings) == 2, warnings  # the first drop, and the count at close
    assert f"dropped {port.dropped} datagrams" in warnings[1]


def test_piped_serial_input_is_read_ahead_only_so_far_and_never_lost() -> None:
    r, w = os.pipe()
    total = 3 * MAX_PENDING_INPUT + 12345
    payload = bytes(i & 0xFF for i in range(total))
    host = SerialHost(output=open(os.devnull, "wb"), input_fd=r)  # noqa: SIM115
    host.start(lambda: None)

    def write() -> None:
        with os.fdopen(w, "wb") as f:
            f.write(payload)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        _wait_for(lambda: host._queued >= MAX_PENDING_INPUT)
        time.sleep(0.2)  # the reader would go on here if it were unbounded
        assert host._queued < MAX_PENDING_INPUT + 4096
        got = bytearray()
        while len(got) < total:
            chunk = host.take(65536)
            if not chunk:
                time.sleep(0.001)
            got += chunk
        assert bytes(got) == payload
    finally:
        writer.join(5)
        os.close(r)
