"""A tiny FUSE file system speaking the kernel protocol on /dev/fuse directly.

It answers INIT, GETATTR of its root and STATFS, and ENOSYS to everything
else: enough to be mounted and statvfs'd. Stop it with SIGSTOP and every
statvfs of its mount point hangs in the kernel until SIGCONT, like a FUSE
server that hung. Usage: python tests/fuse_server.py MOUNTPOINT
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys

IN_HEADER = struct.Struct("=IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("=IiQ")  # len error unique
FUSE_GETATTR, FUSE_STATFS, FUSE_INIT, FUSE_DESTROY = 3, 17, 26, 38
ROOT_ATTR = struct.pack("=QQQQQQIIIIIIIIII", 1, 0, 0, 0, 0, 0, 0, 0, 0, 0o40755, 2, 0, 0, 0,
                        4096, 0)  # ino size blocks atime mtime ctime *nsec mode nlink ...


def reply(fd: int, unique: int, body: bytes = b"", error: int = 0) -> None:
    os.write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), -error, unique) + body)


def main() -> None:
    mountpoint = sys.argv[1]
    fd = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"fsmondtest", mountpoint.encode(), b"fuse.fsmondtest", 0, opts) != 0:
        sys.exit(f"mount: {os.strerror(ctypes.get_errno())}")
    print("mounted", flush=True)
    while True:
        try:
            req = os.read(fd, 1 << 20)
        except OSError as e:
            if e.errno == errno.ENODEV:  # unmounted
                return
            raise
        _len, opcode, unique, _node, *_ = IN_HEADER.unpack_from(req)
        if opcode == FUSE_INIT:
            _major, minor = struct.unpack_from("=II", req, IN_HEADER.size)
            body = struct.pack("=IIIIHHIIHHII", 7, min(minor, 31), 0, 0, 1, 1, 65536, 1, 0, 0,
                               0, 0) + b"\0" * 28
            reply(fd, unique, body[:64])
        elif opcode == FUSE_GETATTR:
            reply(fd, unique, struct.pack("=QII", 1, 0, 0) + ROOT_ATTR)
        elif opcode == FUSE_STATFS:
            reply(fd, unique, struct.pack("=QQQQQIIII", 1000, 500, 500, 100, 50, 4096, 255,
                                          4096, 0) + b"\0" * 24)
        elif opcode == FUSE_DESTROY:
            reply(fd, unique)
            return
        else:
            reply(fd, unique, error=errno.ENOSYS)


if __name__ == "__main__":
    main()
