#!/bin/sh
# Run a guest image under QEMU the way the tests compare against rrvmm:
#   guests/qemu-run.sh build/hello.mb "exit=3"  [extra qemu args...]
# QEMU's exit status is (V << 1) | 1 for an isa-debug-exit write of V; this
# script prints the guest's V on stderr as "qemu-run: guest exit V".
# SeaBIOS prints a banner on the serial port before the guest starts.
set -u
img=$1
shift
append=${1:-}
[ $# -gt 0 ] && shift
qemu-system-x86_64 -nographic -serial stdio -monitor none -display none \
	-no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 -machine pc \
	-kernel "$img" -append "$append" "$@"
rc=$?
if [ $((rc & 1)) -eq 1 ]; then
	echo "qemu-run: guest exit $((rc >> 1))" >&2
else
	echo "qemu-run: qemu exit $rc (no isa-debug-exit write: reset/triple fault or error)" >&2
fi
exit $rc
