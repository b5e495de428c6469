"""virtio-rng: every byte comes from the ``entropy`` callable, never from the host."""

from __future__ import annotations

from driver import Driver

from rrvmm.devices.virtio import VirtioRng


class Source:
    """A deterministic entropy seam that logs each request size."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        self.asked.append(n)
        out = bytes((self.counter + i) & 0xFF for i in range(n))
        self.counter += n
        return out


def test_fills_exactly_n_bytes_from_the_callable() -> None:
    src = Source()
    d = Driver(VirtioRng(src))
    (q,) = d.start()
    a = d.buffer(b"\xee" * 20, writable=True)
    a = (a[0], 16, True)  # the buffer is 16 bytes; the 4 after it must stay untouched
    b1, b2 = d.buffer(3, writable=True), d.buffer(5, writable=True)
    h1 = q.post(a)
    h2 = q.post(b1, b2)
    q.kick()
    assert q.used() == [(h1, 16), (h2, 8)]
    assert src.asked == [16, 8]
    assert d.read(a, 20) == bytes(range(16)) + b"\xee" * 4
    assert d.read(b1) + d.read(b2) == bytes(range(16, 24))
    assert d.interrupt() == 1 and not d.wire.level


def test_nothing_posted_asks_for_nothing() -> None:
    src = Source()
    d = Driver(VirtioRng(src))
    (q,) = d.start()
    q.kick()
    assert src.asked == [] and q.used() == []
