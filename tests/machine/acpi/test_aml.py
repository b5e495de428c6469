"""The AML encoder, checked byte for byte against ACPI 6.x chapter 20 and by parsing back."""

from __future__ import annotations

import pytest

from rrvmm.machine.acpi import aml


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (63, b"\x3f"),  # the largest one-byte PkgLength
        (64, b"\x40\x04"),  # two bytes: low nibble in the lead byte, the rest after
        (0x123, b"\x43\x12"),
        (4095, b"\x4f\xff"),  # the largest two-byte PkgLength
        (4096, b"\x80\x00\x01"),
        (0xFFFFF, b"\x8f\xff\xff"),
        (0x100000, b"\xc0\x00\x00\x01"),
        (0xFFFFFFF, b"\xcf\xff\xff\xff"),
    ],
)
def test_pkg_length_boundaries(value: int, encoded: bytes, aml_reader) -> None:
    assert aml.pkg_length(value) == encoded
    assert aml_reader.read_pkg_length(encoded, 0) == (value, len(encoded))


def test_pkg_length_rejects_more_than_28_bits() -> None:
    with pytest.raises(ValueError):
        aml.pkg_length(0x10000000)


@pytest.mark.parametrize(
    ("payload_len", "header_len"),
    # The PkgLength counts itself, so the size steps up one byte before the payload reaches
    # the limit: 62 + 1 = 63 fits one byte, 63 + 1 = 64 does not.
    [(0, 1), (62, 1), (63, 2), (4093, 2), (4094, 3), (0xFFFFC, 3), (0xFFFFD, 4)],
)
def test_pkg_framed_counts_its_own_bytes(payload_len: int, header_len: int, aml_reader) -> None:
    framed = aml.pkg_framed(bytes(payload_len))
    value, size = aml_reader.read_pkg_length(framed, 0)
    assert size == header_len
    assert value == len(framed) == payload_len + header_len


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (2, b"\x0a\x02"),
        (0xFF, b"\x0a\xff"),
        (0x100, b"\x0b\x00\x01"),
        (0xFEB00000, b"\x0c\x00\x00\xb0\xfe"),
        (1 << 32, b"\x0e\x00\x00\x00\x00\x01\x00\x00\x00"),
    ],
)
def test_integers_use_the_shortest_encoding(value: int, encoded: bytes) -> None:
    assert aml.integer(value) == encoded


@pytest.mark.parametrize(
    ("path", "encoded"),
    [
        ("_HID", b"_HID"),
        ("_S5", b"_S5_"),  # padded with underscores
        ("\\_SB", b"\\_SB_"),
        ("\\_SB.VR00", b"\\\x2e_SB_VR00"),
        ("\\_SB.PCI0.LPC", b"\\\x2f\x03_SB_PCI0LPC_"),
        ("^VR01", b"^VR01"),
        ("\\", b"\\\x00"),
    ],
)
def test_name_strings(path: str, encoded: bytes) -> None:
    assert aml.name_string(path) == encoded


@pytest.mark.parametrize("bad", ["vr00", "0ABC", "TOOLONG", "A-B"])
def test_bad_name_segments_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        aml.name_string(bad)


def test_string_and_eisa_id() -> None:
    assert aml.string("LNRO0005") == b"\x0dLNRO0005\x00"
    assert aml.eisa_id("PNP0A03") == b"\x0c" + (0x030AD041).to_bytes(4, "little")
    assert aml.eisa_id("PNP0C0C") == b"\x0c" + (0x0C0CD041).to_bytes(4, "little")


def test_device_with_names_parses_back(aml_reader) -> None:
    body = aml.scope(
        "\\_SB",
        aml.device(
            "VR00", aml.name("_HID", aml.string("LNRO0005")), aml.name("_UID", aml.integer(7))
        ),
        aml.method("_STA", 0, b"\xa4" + aml.integer(0xF)),  # Return (0x0F)
    )
    [scope] = aml_reader.read_terms(body)
    assert (scope.kind, scope.name) == ("Scope", "\\_SB_")
    device, method = scope.children
    assert (device.kind, device.name) == ("Device", "VR00")
    hid, uid = device.children
    assert (hid.name, hid.value.value) == ("_HID", "LNRO0005")
    assert (uid.name, uid.value.value) == ("_UID", 7)
    assert (method.kind, method.name, method.value) == ("Method", "_STA", (0, b"\xa4\x0a\x0f"))


def test_a_device_larger_than_63_bytes_gets_a_two_byte_length(aml_reader) -> None:
    big = aml.device("BIG0", *(aml.name(f"N{i:03}", aml.integer(0xFFFF)) for i in range(20)))
    assert big[2] >> 6 == 1
    [device] = aml_reader.read_terms(big)
    assert len(device.children) == 20


def test_package_counts_its_elements(aml_reader) -> None:
    encoded = aml.package(aml.integer(5), aml.integer(5), aml.integer(0), aml.integer(0))
    assert encoded == b"\x12\x08\x04\x0a\x05\x0a\x05\x00\x00"
    [term] = aml_reader.read_terms(aml.name("\\_S5", encoded))
    assert [e.value for e in term.value.children] == [5, 5, 0, 0]


def test_resource_template_descriptors(aml_reader) -> None:
    mem = aml.memory32_fixed(0xFEB00000, 0x200)
    assert mem == b"\x86\x09\x00\x01\x00\x00\xb0\xfe\x00\x02\x00\x00"
    irq = aml.extended_interrupt(10)
    # Consumer, level, active high, exclusive: only bit 0 of the flags.
    assert irq == b"\x89\x06\x00\x01\x01\x0a\x00\x00\x00"
    assert aml.extended_interrupt(3, level=False, active_low=True, shared=True)[3] == 0x0F
    template = aml.resource_template(mem, irq)
    [term] = aml_reader.read_terms(aml.name("_CRS", template))
    buf = term.value.value
    assert sum(buf) & 0xFF == 0  # the End Tag's checksum is filled in
    assert aml_reader.read_resources(buf) == [
        ("Memory32Fixed", 1, 0xFEB00000, 0x200),
        ("Interrupt", 0x01, [10]),
    ]


def test_out_of_range_values_are_rejected() -> None:
    with pytest.raises(ValueError):
        aml.integer(-1)
    with pytest.raises(ValueError):
        aml.memory32_fixed(0xFFFFFF00, 0x200)
    with pytest.raises(ValueError):
        aml.method("_FOO", 8)
