"""ACPI for the PC-like machine: the tables a stock Linux needs to find virtio-mmio devices
and to power off through S5, built in Python and written into the BIOS area by the machine.

``build_acpi`` lays the tables out; ``dump_tables`` reads them back from guest memory the way
the guest would; the PM1 register block they describe is ``rrvmm.devices.acpi_pm.AcpiPm``.
"""

from __future__ import annotations

from rrvmm.devices.acpi_pm import S5_SLP_TYP, AcpiPm
from rrvmm.machine.acpi.tables import (
    AcpiMachine,
    AcpiTables,
    ApicDescription,
    InterruptOverride,
    VirtioMmioSlot,
    build_acpi,
    dump_tables,
    madt,
)

__all__ = [
    "AcpiMachine",
    "AcpiPm",
    "AcpiTables",
    "ApicDescription",
    "InterruptOverride",
    "S5_SLP_TYP",
    "VirtioMmioSlot",
    "build_acpi",
    "dump_tables",
    "madt",
]
