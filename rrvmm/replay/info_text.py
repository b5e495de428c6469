"""`rrvmm trace info` for people: one labelled line per fact, sizes in KiB/MiB.

(``--json`` prints ``inspect.info``'s dict as it is, for scripts.)
"""

from __future__ import annotations

from typing import Any

__all__ = ["format_info", "size_text"]


def size_text(n: int | None) -> str:
    """128 MiB, 31.7 KiB, 512 bytes (exact binary units shown without decimals)."""
    if n is None:
        return "?"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if n % scale == 0 else f"{value:.1f} {unit}"
    return f"{n} bytes"


def _guest_time(ns: int) -> str:
    if ns < 1_000_000:
        return f"{ns / 1000:.0f} us"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.3f} s"


def format_info(info: dict[str, Any], footer: dict[str, Any] | None = None) -> str:
    lines: list[tuple[str, str]] = [("trace", str(info.get("path")))]
    lines.append(
        (
            "recorded",
            f"{info.get('created') or '?'} by rrvmm {info.get('rrvmm') or '?'}"
            f" on the {info.get('backend') or '?'} CPU",
        )
    )
    m = info.get("machine") or {}
    machine = [f"{size_text(m.get('memory'))} RAM", f"irqchip {m.get('irqchip', 'user')}"]
    if m.get("cmdline"):
        machine.append(f'command line "{m["cmdline"]}"')
    if m.get("virtio_cmdline"):
        machine.append("virtio devices on the command line")
    lines.append(("machine", ", ".join(machine)))
    for name, image in (info.get("images") or {}).items():
        lines.append(
            (name, f"{image['path']} ({size_text(image['size'])}, sha256 {image['sha256']})")
        )
    disk = m.get("disk")
    if disk:
        written = ", written by the guest" if disk.get("written") else ""
        lines.append(
            ("disk", f"{disk.get('path')} ({disk.get('sectors')} sectors{written},"
                     f" sha256 {str(disk.get('sha256'))[:16]}…)")
        )  # fmt: skip
    chunks = info.get("chunks", 0)
    state = "complete" if info.get("complete") else "cut short (the recording did not finish)"
    lines.append(
        (
            "events",
            f"{info.get('events')} in {chunks} chunk{'s' if chunks != 1 else ''},"
            f" last exit {info.get('last_exit')}, {state}",
        )
    )
    end = info.get("end")
    if end:
        lines.append(("ended", f"status {end.get('status')}: {end.get('reason')}"
                               f" ({end.get('exits')} exits)"))  # fmt: skip
    if footer and footer.get("forced_exits") is not None:
        lines.append(("forced", f"{footer['forced_exits']} forced exits (host kicks)"))
    if footer and footer.get("guest_ns") is not None:
        lines.append(("guest time", _guest_time(int(footer["guest_ns"]))))
    if info.get("chaos"):
        from rrvmm.host.chaos import chaos_text

        lines.append(("chaos", chaos_text(info["chaos"])))
    if info.get("packed"):
        carried = ", ".join(
            f"{name} ({row['what']}, {size_text(row['size'])} stored in {size_text(row['stored'])})"
            for name, row in (info.get("carries") or {}).items()
        )
        lines.append(("packed", f"yes, carries {carried or 'nothing'}"))
    else:
        lines.append(("packed", "no (rrvmm pack makes a copy that carries its files)"))
    width = max(len(k) for k, _ in lines)
    return "".join(f"{k.ljust(width)}  {v}\n" for k, v in lines)
