"""A /proc/cpuinfo for the CPU qemu-user emulates, to bind over the host's (x86) one.

    QEMU_CPU=cortex-a72 python3 deploy/arm64/cpuinfo.py cortex-a72 [--cores N] > cpuinfo

qemu-user passes the host's /proc/cpuinfo through; onnxruntime's CPU detection (pytorch cpuinfo)
cannot parse an x86 one, and believes an arm64 one: a Cortex-A76's on an emulated Cortex-A72 makes
it pick the dot-product (SDOT) kernels, which the A72 lacks (SIGILL).  So the Features line comes
from this process's own HWCAP bits (what the emulated CPU has), the part number from the name.
Standard library only: it runs on Debian's python3 in the emulated root.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Linux arch/arm64/include/uapi/asm/hwcap.h, in bit order
HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
         "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm "
          "svebf16 i8mm bf16 dgh rng bti mte").split()
AT_HWCAP, AT_HWCAP2 = 16, 26
# (implementer, variant, part, revision): Arm's MIDR fields; qemu's "max" reports implementer 0
MIDR = {
    "cortex-a53": (0x41, 0x0, 0xD03, 4),   # Pi 3, Pi Zero 2
    "cortex-a72": (0x41, 0x0, 0xD08, 3),   # Pi 4
    "cortex-a76": (0x41, 0x4, 0xD0B, 1),   # Pi 5
    "max": (0x00, 0x0, 0x051, 0),
}


def features() -> list[str]:
    raw = Path("/proc/self/auxv").read_bytes()
    words = [int.from_bytes(raw[i: i + 8], "little") for i in range(0, len(raw) - 7, 8)]
    aux = dict(zip(words[::2], words[1::2]))
    names = [n for bit, n in enumerate(HWCAP) if aux.get(AT_HWCAP, 0) >> bit & 1]
    return names + [n for bit, n in enumerate(HWCAP2) if aux.get(AT_HWCAP2, 0) >> bit & 1]


def cpuinfo(cpu: str, cores: int) -> str:
    impl, variant, part, rev = MIDR.get(cpu, MIDR["max"])
    block = (f"BogoMIPS\t: 108.00\nFeatures\t: {' '.join(features())}\nCPU implementer\t: 0x{impl:02x}\n"
             f"CPU architecture: 8\nCPU variant\t: 0x{variant:x}\nCPU part\t: 0x{part:03x}\nCPU revision\t: {rev}\n\n")
    return "".join(f"processor\t: {i}\n{block}" for i in range(cores))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cpu", help="qemu's CPU name (QEMU_CPU): cortex-a76, cortex-a72, cortex-a53, max")
    p.add_argument("--cores", type=int, default=4)
    args = p.parse_args(argv)
    sys.stdout.write(cpuinfo(args.cpu, args.cores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
