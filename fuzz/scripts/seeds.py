#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/records/ (run from anywhere).

An input is a byte n, then n % 16 bytes of table key (a lease id: those bytes, little-endian),
then the record (`check_roundtrip` in src/record.rs).
"""

import struct
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "corpus" / "records"
V1 = 1  # version byte of LeaseRecord (without a checkpoint) and KvRecord
V2 = 2  # version byte of LeaseRecord with a checkpoint (format 2); of KvRecord with a checksum
V3 = 3  # version byte of LeaseRecord with a checkpoint and a checksum


def varint(n: int) -> bytes:
    """postcard's unsigned LEB128 varint."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def lease(ttl_nanos: int, granted_revision: int) -> bytes:
    return bytes([V1]) + varint(ttl_nanos) + varint(granted_revision)


def lease_v2(ttl_nanos: int, granted_revision: int, uptime_deadline: int, wall_deadline: int) -> bytes:
    return (
        bytes([V2])
        + varint(ttl_nanos)
        + varint(granted_revision)
        + varint(uptime_deadline)
        + varint(wall_deadline)
    )


def kv(lease_id: int, create: int, mod: int, version: int, value: bytes) -> bytes:
    return (
        bytes([V1])
        + varint(lease_id)
        + varint(create)
        + varint(mod)
        + varint(version)
        + varint(len(value))
        + value
    )


def sealed(key: bytes, record: bytes) -> bytes:
    """A record followed by the CRC-32 of its key and itself, as format 3 writes it."""
    return record + struct.pack("<I", zlib.crc32(key + record))


def lease_v3(lease_id: int, *fields: int) -> bytes:
    return sealed(struct.pack("<Q", lease_id), bytes([V3]) + lease_v2(*fields)[1:])


def kv_v2(key: bytes, *fields, value: bytes) -> bytes:
    return sealed(key, bytes([V2]) + kv(*fields, value)[1:])


def under(key: bytes, record: bytes) -> bytes:
    """The input checking `record` under table key `key` (at most 15 bytes)."""
    return bytes([len(key)]) + key + record


ID7 = struct.pack("<Q", 7)

SEEDS = {
    "lease-10s": lease(10_000_000_000, 7),
    "lease-max": lease(2**64 - 1, 2**64 - 1),
    "lease-v2-checkpoint": lease_v2(10_000_000_000, 7, 16_000_000_000, 1_700_000_016_000_000_000),
    "lease-v2-max": lease_v2(2**64 - 1, 2**64 - 1, 2**64 - 1, 2**64 - 1),
    "key-attached": kv(3, 1, 5, 2, b"10001"),
    "key-no-lease-empty-value": kv(0, 1, 1, 1, b""),
    "key-max": kv(2**64 - 1, 2**64 - 1, 2**64 - 1, 2**64 - 1, b"\x00\xff" * 8),
    "bad-empty": b"",
    "bad-unknown-version": bytes([9]) + varint(1) + varint(2),
    "bad-version-only": bytes([V1]),
    "bad-truncated-lease": lease(10_000_000_000, 7)[:-1],
    "bad-truncated-lease-v2": lease_v2(10_000_000_000, 7, 1, 2)[:-1],
    "bad-v1-body-under-v2": bytes([V2]) + lease(1, 2)[1:],
    "bad-truncated-key-value": kv(3, 1, 5, 2, b"10001")[:-2],
    "bad-trailing-byte": lease(1, 2) + b"\x00",
    "bad-varint-overflow": bytes([V1]) + b"\xff" * 11,
    "lease-v3": lease_v3(7, 10_000_000_000, 7, 16_000_000_000, 1_700_000_016_000_000_000),
    "key-v2": kv_v2(b"/k/1", 3, 1, 5, 2, value=b"10001"),
    "bad-lease-v3-checksum": lease_v3(7, 1, 2, 3, 4)[:-1] + b"\x00",
}
# Lease seeds are checked under lease id 7, key seeds under "/k/1"; old ones under no key.
KEYED = {"lease-v3": ID7, "key-v2": b"/k/1", "bad-lease-v3-checksum": ID7}
SEEDS = {name: under(KEYED.get(name, b""), data) for name, data in SEEDS.items()}

OUT.mkdir(parents=True, exist_ok=True)
for name, data in SEEDS.items():
    (OUT / name).write_bytes(data)
print(f"wrote {len(SEEDS)} seeds to {OUT}")
