"""Thin wrappers over the /dev/kvm, VM and vCPU file descriptors.

ioctls go through libc via ctypes (not ``fcntl.ioctl``) so that a KVM_RUN interrupted by a
kick returns EINTR to us instead of being retried, and so the GIL is released while the
guest runs.
"""

from __future__ import annotations

import ctypes as C
import errno
import mmap
import os

from rrvmm.cpu.backend import BackendError, BackendUnavailable
from rrvmm.kvm import linux_kvm as K

__all__ = ["Kvm", "KvmVm", "KvmVcpu", "KvmIoctlError"]

_libc = C.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.argtypes = [C.c_int, C.c_ulong, C.c_void_p]
_ioctl.restype = C.c_int
_mmap = _libc.mmap
_mmap.argtypes = [C.c_void_p, C.c_size_t, C.c_int, C.c_int, C.c_int, C.c_long]
_mmap.restype = C.c_void_p
_munmap = _libc.munmap
_munmap.argtypes = [C.c_void_p, C.c_size_t]
_MAP_FAILED = C.c_void_p(-1).value


class KvmIoctlError(BackendError):
    def __init__(self, name: str, err: int) -> None:
        super().__init__(f"{name} failed: {os.strerror(err)}")
        self.errno = err


def _names() -> dict[int, str]:
    return {v: k for k, v in vars(K).items() if k.startswith("KVM_") and isinstance(v, int)}


_IOCTL_NAMES: dict[int, str] = {}


def ioctl(fd: int, request: int, arg: object = None) -> int:
    """Call ioctl; ``arg`` is a ctypes object (passed by reference), an int, or None."""
    if arg is None:
        p = None
    elif isinstance(arg, int):
        p = arg
    else:
        p = C.addressof(arg)  # type: ignore[arg-type]
    ret = _ioctl(fd, request, p)
    if ret < 0:
        err = C.get_errno()
        if not _IOCTL_NAMES:
            _IOCTL_NAMES.update(_names())
        raise KvmIoctlError(_IOCTL_NAMES.get(request, hex(request)), err)
    return ret


class Kvm:
    """The /dev/kvm system fd: capabilities and supported CPUID."""

    def __init__(self, path: str = "/dev/kvm") -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BackendUnavailable(f"{path} does not exist (no KVM on this host)") from None
        except PermissionError:
            raise BackendUnavailable(f"{path} is not writable by this user") from None
        except OSError as e:
            raise BackendUnavailable(f"cannot open {path}: {e.strerror}") from None
        try:
            version = ioctl(self.fd, K.KVM_GET_API_VERSION)
        except KvmIoctlError as e:
            os.close(self.fd)
            raise BackendUnavailable(f"{path} is not a KVM device ({e})") from None
        if version != K.KVM_API_VERSION:
            os.close(self.fd)
            raise BackendUnavailable(f"KVM API version {version}, need {K.KVM_API_VERSION}")
        self.vcpu_mmap_size = ioctl(self.fd, K.KVM_GET_VCPU_MMAP_SIZE)

    def check_extension(self, cap: int) -> int:
        return ioctl(self.fd, K.KVM_CHECK_EXTENSION, cap)

    def supported_cpuid(self) -> list[tuple[int, ...]]:
        """(function, index, flags, eax, ebx, ecx, edx) rows of KVM_GET_SUPPORTED_CPUID."""
        n = 64
        while True:
            buf = K.kvm_cpuid2(n)()
            buf.nent = n
            try:
                ioctl(self.fd, K.KVM_GET_SUPPORTED_CPUID, buf)
            except KvmIoctlError as e:
                if e.errno == errno.E2BIG and n < 4096:
                    n *= 2
                    continue
                raise
            return [
                (e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
                for e in buf.entries[: buf.nent]
            ]

    def create_vm(self) -> KvmVm:
        return KvmVm(self, ioctl(self.fd, K.KVM_CREATE_VM, 0))

    def close(self) -> None:
        os.close(self.fd)


class KvmVm:
    def __init__(self, kvm: Kvm, fd: int) -> None:
        self.kvm = kvm
        self.fd = fd
        self._regions: dict[int, K.kvm_userspace_memory_region] = {}

    def set_user_memory_region(
        self, slot: int, gpa: int, size: int, host_addr: int, flags: int = 0
    ) -> None:
        r = K.kvm_userspace_memory_region(slot, flags, gpa, size, host_addr)
        ioctl(self.fd, K.KVM_SET_USER_MEMORY_REGION, r)
        if size:
            self._regions[slot] = r
        else:
            self._regions.pop(slot, None)

    def get_dirty_log(self, slot: int) -> bytes:
        """The slot's dirty bitmap (one bit per 4 KiB page), cleared by the read."""
        r = self._regions[slot]
        nbytes = ((r.memory_size >> 12) + 63) // 64 * 8
        bitmap = (C.c_uint8 * nbytes)()
        ioctl(self.fd, K.KVM_GET_DIRTY_LOG, K.kvm_dirty_log(slot, 0, C.addressof(bitmap)))
        return bytes(bitmap)

    def set_tss_addr(self, addr: int) -> None:
        ioctl(self.fd, K.KVM_SET_TSS_ADDR, addr)

    def create_vcpu(self, index: int = 0) -> KvmVcpu:
        return KvmVcpu(self, ioctl(self.fd, K.KVM_CREATE_VCPU, index))

    def close(self) -> None:
        os.close(self.fd)


class KvmVcpu:
    """A vCPU fd and its mmap'ed ``struct kvm_run``."""

    def __init__(self, vm: KvmVm, fd: int) -> None:
        self.vm = vm
        self.fd = fd
        # libc mmap rather than mmap.mmap: ctypes views into a Python mmap pin it open
        self._run_size = vm.kvm.vcpu_mmap_size
        addr = _mmap(None, self._run_size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
        if addr in (None, _MAP_FAILED):
            raise KvmIoctlError("mmap(kvm_run)", C.get_errno())
        self._run_addr: int = addr
        self.run_struct = K.kvm_run.from_address(addr)

    def run(self) -> bool:
        """KVM_RUN; False when interrupted by a signal (EINTR) before or during the run."""
        ret = _ioctl(self.fd, K.KVM_RUN, None)
        if ret < 0:
            err = C.get_errno()
            if err in (errno.EINTR, errno.EAGAIN):
                return False
            raise KvmIoctlError("KVM_RUN", err)
        return True

    def io_buffer(self, offset: int, length: int) -> C.Array[C.c_char]:
        return (C.c_char * length).from_address(self._run_addr + offset)

    def get(self, request: int, struct: type[C.Structure]) -> C.Structure:
        obj = struct()
        ioctl(self.fd, request, obj)
        return obj

    def set(self, request: int, obj: C.Structure) -> None:
        ioctl(self.fd, request, obj)

    def interrupt(self, vector: int) -> None:
        ioctl(self.fd, K.KVM_INTERRUPT, K.kvm_interrupt(vector))

    def set_cpuid2(self, entries: list[tuple[int, ...]]) -> None:
        buf = K.kvm_cpuid2(len(entries))()
        buf.nent = len(entries)
        for dst, (fn, idx, flags, a, b, c, d) in zip(buf.entries, entries, strict=True):
            dst.function, dst.index, dst.flags = fn, idx, flags
            dst.eax, dst.ebx, dst.ecx, dst.edx = a, b, c, d
        ioctl(self.fd, K.KVM_SET_CPUID2, buf)

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        buf = K.kvm_msrs(len(indices))()
        buf.nmsrs = len(indices)
        for e, i in zip(buf.entries, indices, strict=True):
            e.index = i
        n = ioctl(self.fd, K.KVM_GET_MSRS, buf)
        return {e.index: e.data for e in buf.entries[:n]}

    def set_msrs(self, values: dict[int, int]) -> None:
        buf = K.kvm_msrs(len(values))()
        buf.nmsrs = len(values)
        for e, (i, v) in zip(buf.entries, values.items(), strict=True):
            e.index, e.data = i, v
        n = ioctl(self.fd, K.KVM_SET_MSRS, buf)
        if n != len(values):
            bad = list(values)[n]
            raise BackendError(f"KVM_SET_MSRS refused MSR {bad:#x}")

    def set_guest_debug(self, control: int, debugreg: list[int] | None = None) -> None:
        dbg = K.kvm_guest_debug()
        dbg.control = control
        for i, v in enumerate(debugreg or []):
            dbg.arch.debugreg[i] = v
        ioctl(self.fd, K.KVM_SET_GUEST_DEBUG, dbg)

    def close(self) -> None:
        _munmap(self._run_addr, self._run_size)
        os.close(self.fd)
