#!/usr/bin/env python3
"""Writes the seed archives of the archive_extract fuzz target into fuzz/corpus/archive_extract/.

Each seed is a small zip or gzip file built entry by entry, so the hostile ones (setuid modes,
a symlink followed by a directory entry of the same name, `..` names) can be written exactly;
the archive tools on a machine would refuse to make most of them. The output is deterministic
(fixed times), so running this again leaves the committed seeds unchanged.

Usage: python3 fuzz/seeds/make_archive_seeds.py
"""

import io
import os
import struct
import warnings
import zipfile
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus", "archive_extract")
WHEN = (2024, 5, 1, 12, 30, 0)
GZIP_MTIME = 1714566600

S_IFREG = 0o100000
S_IFDIR = 0o040000
S_IFLNK = 0o120000


def entry(name, mode, data=b"", compress=zipfile.ZIP_DEFLATED):
    return (name, mode, data, compress)


def make_zip(entries):
    # Duplicate names are some of the seeds' point.
    warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, mode, data, compress in entries:
            info = zipfile.ZipInfo(name, WHEN)
            info.create_system = 3  # unix: the mode is in the high 16 bits
            info.external_attr = mode << 16
            if name.endswith("/"):
                info.external_attr |= 0x10  # MS-DOS directory bit, as zip tools set it
                compress = zipfile.ZIP_STORED
            info.compress_type = compress
            archive.writestr(info, data)
    return buffer.getvalue()


def gzip_member(name, data):
    """One gzip member whose header carries `name` verbatim (Python's gzip would strip it)."""
    flags = 0x08 if name is not None else 0
    header = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", GZIP_MTIME) + b"\x00\x03"
    if name is not None:
        header += name.encode() + b"\x00"
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = compressor.compress(data) + compressor.flush()
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + body + trailer


SEEDS = {
    # Ordinary archives, as the runner's own artifact and cache uploads look.
    "zip-file-and-directory": make_zip([
        entry("out/", S_IFDIR | 0o755),
        entry("out/report.txt", S_IFREG | 0o644, b"all tests passed\n"),
        entry("out/bin/", S_IFDIR | 0o750),
        entry("out/bin/tool", S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
        entry("README", S_IFREG | 0o600, b"stored, not deflated\n", zipfile.ZIP_STORED),
    ]),
    "zip-relative-symlink-inside": make_zip([
        entry("lib/", S_IFDIR | 0o755),
        entry("lib/libx.so.1", S_IFREG | 0o644, b"\x7fELF"),
        entry("lib/libx.so", S_IFLNK | 0o777, b"libx.so.1"),
    ]),
    "zip-no-unix-mode": make_zip([entry("plain.txt", 0, b"no mode bits\n")]),
    # A symlink to a directory beside the root, then a directory entry of the same name: the
    # directory's mode (and time) would be applied through the link, to `outside`.
    "zip-symlink-dir-then-dir-entry-mode-777": make_zip([
        entry("d", S_IFLNK | 0o777, b"../outside"),
        entry("d/", S_IFDIR | 0o777),
    ]),
    "zip-symlink-dir-then-dir-entry-mode-700": make_zip([
        entry("d", S_IFLNK | 0o777, b"../outside"),
        entry("d/", S_IFDIR | 0o700),
    ]),
    # Writes through a symlink on the way, and names that leave the root.
    "zip-symlink-then-file-through-it": make_zip([
        entry("link", S_IFLNK | 0o777, b".."),
        entry("link/through.txt", S_IFREG | 0o644, b"escaped\n"),
    ]),
    "zip-symlink-to-outside-file-then-same-name-file": make_zip([
        entry("k", S_IFLNK | 0o777, b"../outside/keep"),
        entry("k", S_IFREG | 0o644, b"replaces the link, not the target\n"),
    ]),
    "zip-symlink-to-outside-file-then-dir-entry": make_zip([
        entry("k", S_IFLNK | 0o777, b"../outside/keep"),
        entry("k/", S_IFDIR | 0o777),
    ]),
    "zip-dotdot-escape": make_zip([entry("../escape", S_IFREG | 0o644, b"escaped\n")]),
    "zip-nested-dotdot-escape": make_zip([
        entry("a/b/../../../outside/keep", S_IFREG | 0o644, b"overwritten\n"),
    ]),
    "zip-absolute-path": make_zip([entry("/tmp/absolute.txt", S_IFREG | 0o644, b"abs\n")]),
    "zip-dot-entry": make_zip([entry("./", S_IFDIR | 0o777)]),
    # Special mode bits, which extraction must not restore.
    "zip-setuid-file": make_zip([entry("suid", S_IFREG | 0o104755, b"#!/bin/sh\nid\n")]),
    "zip-setgid-sticky-directory": make_zip([
        entry("shared/", S_IFDIR | 0o43777),
        entry("shared/file", S_IFREG | 0o644, b"x\n"),
    ]),
    # Gzip members: the file name comes from the header.
    "gzip-named-member": gzip_member("metadata.json", b'{"files": 3}\n'),
    "gzip-unnamed-member": gzip_member(None, b"artifacts without a name\n"),
    "gzip-dotdot-name": gzip_member("../escape", b"escaped\n"),
    "gzip-name-through-outside": gzip_member("../outside/keep", b"overwritten\n"),
    "gzip-two-members": gzip_member("first.txt", b"one\n") + gzip_member("second.txt", b"two\n"),
    "gzip-truncated": gzip_member("cut.txt", b"0123456789" * 50)[:30],
    # Not archives at all.
    "zstd-magic": b"\x28\xb5\x2f\xfd" + b"\x00" * 16,
    "corrupt-zip-local-header": b"PK\x03\x04 definitely not a zip",
    "empty": b"",
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(OUT, name), "wb") as file:
            file.write(data)
    print(f"wrote {len(SEEDS)} seeds to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
