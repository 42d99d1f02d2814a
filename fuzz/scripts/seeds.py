#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/records/ (run from anywhere)."""

from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "corpus" / "records"
V1 = 1  # version byte of LeaseRecord (without a checkpoint) and KvRecord
V2 = 2  # version byte of LeaseRecord with a checkpoint


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
}

OUT.mkdir(parents=True, exist_ok=True)
for name, data in SEEDS.items():
    (OUT / name).write_bytes(data)
print(f"wrote {len(SEEDS)} seeds to {OUT}")
