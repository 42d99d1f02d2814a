//! Encoding of the records stored in redb: one version byte, then the record in postcard, then
//! (in the versions this build writes) a CRC-32 of the record and of the key it is stored under.
//!
//! Each record type has its own version byte so that it can change without rewriting the others.
//! Decoders accept exactly one encoding per version and reject anything else (unknown version,
//! truncated bytes, trailing bytes, a checksum that does not match) with [`Error::Corrupted`];
//! they never panic.
//!
//! Lease records have three versions: v1 (`ttl_nanos`, `granted_revision`), written by format 1;
//! v2, which adds a [`Checkpoint`], written by format 2; and v3, v2's fields and a checksum,
//! written by this build (format 3) for every record that carries a checkpoint, which is every
//! record it writes itself. A v1 record read from an older file decodes with no checkpoint, and
//! re-encodes as v1, byte for byte the same meaning. Key records have two: v1 (format 1 and 2)
//! and v2, v1's fields and a checksum.
//!
//! # Checksums
//!
//! redb checks its page checksums only when asked (an open with the integrity check on,
//! `verify`); an ordinary read trusts the page. A v3 lease record and a v2 key record end with
//! the CRC-32 (IEEE, little-endian) of the table key it is stored under (a lease's id as 8
//! little-endian bytes; a key's bytes) followed by the record's bytes before the checksum. So a
//! record whose bytes, or whose key, were changed on disk is refused with [`Error::Corrupted`]
//! when it is read, with or without redb's check; a record moved under another key is too. Older
//! versions carry no checksum and are read as before.
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version byte of a [`LeaseRecord`] without a checkpoint (format 1).
const LEASE_V1: u8 = 1;
/// Version byte of a [`LeaseRecord`] with a checkpoint, without a checksum (format 2).
const LEASE_V2: u8 = 2;
/// Version byte of a [`LeaseRecord`] with a checkpoint and a checksum, as written by this build.
const LEASE_V3: u8 = 3;
/// Version byte of a [`KvRecord`] without a checksum (formats 1 and 2).
const KV_V1: u8 = 1;
/// Version byte of a [`KvRecord`] with a checksum, as written by this build.
const KV_V2: u8 = 2;
/// Length of the checksum that ends a v3 lease record and a v2 key record.
const CRC_LEN: usize = 4;

/// A lease as stored in the `leases` table (keyed by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    /// Granted TTL in nanoseconds (after raising to the minimum).
    pub ttl_nanos: u64,
    /// Revision of the database when the lease was granted.
    pub granted_revision: u64,
    /// The lease's deadline as last written (at grant, by a checkpoint, or at a clean close);
    /// `None` in a v1 record.
    pub checkpoint: Option<Checkpoint>,
}

/// A lease's deadline as of a checkpoint, on the two timelines that outlive the process (see
/// [`crate::restart`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The database's uptime (nanoseconds it has been open, summed over every session) at which
    /// the lease expires; compared with the uptime stored in `lessor.meta` it gives the TTL the
    /// lease had left, not counting time the database was closed.
    pub uptime_deadline: u64,
    /// The wall-clock instant at which the lease expires, in nanoseconds since the Unix epoch.
    pub wall_deadline: u64,
}

/// The body of a v1 lease record.
#[derive(Serialize, Deserialize)]
struct LeaseV1 {
    ttl_nanos: u64,
    granted_revision: u64,
}

/// The body of a v2 lease record: v1's fields, then the checkpoint's.
#[derive(Serialize, Deserialize)]
struct LeaseV2 {
    ttl_nanos: u64,
    granted_revision: u64,
    uptime_deadline: u64,
    wall_deadline: u64,
}

/// A key's value and metadata as stored in the `kv` table (keyed by the key).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KvRecord<'a> {
    /// Id of the lease the key is attached to; 0 for none.
    pub lease: u64,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    #[serde(borrow)]
    pub value: &'a [u8],
}

fn encode<T: Serialize>(what: &str, version: u8, record: &T) -> Result<Vec<u8>> {
    // Integers and byte slices always serialise; the error arm is kept rather than assumed away.
    postcard::to_extend(record, vec![version])
        .map_err(|e| Error::Corrupted(format!("cannot encode {what} record: {e}")))
}

/// The checksum of a record stored under `key` whose bytes (version byte included, checksum
/// excluded) are `record`.
fn crc(key: &[u8], record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(record);
    h.finalize()
}

/// [`encode`], then the checksum of the record under `key`.
fn encode_sealed<T: Serialize>(what: &str, version: u8, key: &[u8], record: &T) -> Result<Vec<u8>> {
    let mut bytes = encode(what, version, record)?;
    let sum = crc(key, &bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    Ok(bytes)
}

/// The body of a record stored under `key` that ends with its checksum (`bytes` is the whole
/// record, version byte included), once the checksum is found to match.
fn unseal<'a>(what: &str, key: &[u8], bytes: &'a [u8]) -> Result<&'a [u8]> {
    let Some(split) = bytes.len().checked_sub(CRC_LEN).filter(|&n| n >= 1) else {
        return Err(corrupted(what, "too short for its checksum"));
    };
    let (record, sum) = bytes.split_at(split);
    let mut stored = [0; CRC_LEN];
    stored.copy_from_slice(sum);
    if u32::from_le_bytes(stored) != crc(key, record) {
        return Err(corrupted(
            what,
            "its checksum does not match (the file is damaged)",
        ));
    }
    Ok(&record[1..])
}

fn corrupted(what: &str, why: impl fmt::Display) -> Error {
    Error::Corrupted(format!("{what} record: {why}"))
}

/// Splits a record into its version byte and its body.
fn version<'a>(what: &str, bytes: &'a [u8]) -> Result<(u8, &'a [u8])> {
    match bytes.split_first() {
        None => Err(corrupted(what, "empty")),
        Some((&v, body)) => Ok((v, body)),
    }
}

/// Decodes a record body, which must be consumed exactly.
fn body<'a, T: Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<T> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((record, [])) => Ok(record),
        Ok((_, rest)) => Err(corrupted(
            what,
            format_args!("{} trailing bytes", rest.len()),
        )),
        Err(e) => Err(corrupted(what, e)),
    }
}

impl LeaseRecord {
    /// The record stored under lease id `id`: v3, or v1 for a record without a checkpoint.
    pub(crate) fn encode(&self, id: u64) -> Result<Vec<u8>> {
        let (ttl_nanos, granted_revision) = (self.ttl_nanos, self.granted_revision);
        match self.checkpoint {
            None => encode(
                "lease",
                LEASE_V1,
                &LeaseV1 {
                    ttl_nanos,
                    granted_revision,
                },
            ),
            Some(c) => encode_sealed(
                "lease",
                LEASE_V3,
                &id.to_le_bytes(),
                &LeaseV2 {
                    ttl_nanos,
                    granted_revision,
                    uptime_deadline: c.uptime_deadline,
                    wall_deadline: c.wall_deadline,
                },
            ),
        }
    }

    /// Decodes a v1, v2 or v3 record stored under lease id `id`.
    pub(crate) fn decode(id: u64, bytes: &[u8]) -> Result<LeaseRecord> {
        let (version, b) = version("lease", bytes)?;
        let b = match version {
            LEASE_V3 => unseal("lease", &id.to_le_bytes(), bytes)?,
            _ => b,
        };
        match (version, b) {
            (LEASE_V1, b) => {
                let r: LeaseV1 = body("lease", b)?;
                Ok(LeaseRecord {
                    ttl_nanos: r.ttl_nanos,
                    granted_revision: r.granted_revision,
                    checkpoint: None,
                })
            }
            (LEASE_V2 | LEASE_V3, b) => {
                let r: LeaseV2 = body("lease", b)?;
                Ok(LeaseRecord {
                    ttl_nanos: r.ttl_nanos,
                    granted_revision: r.granted_revision,
                    checkpoint: Some(Checkpoint {
                        uptime_deadline: r.uptime_deadline,
                        wall_deadline: r.wall_deadline,
                    }),
                })
            }
            (v, _) => Err(corrupted("lease", format_args!("unknown version {v}"))),
        }
    }
}

impl<'a> KvRecord<'a> {
    /// The record stored under `key` (v2).
    pub(crate) fn encode(&self, key: &[u8]) -> Result<Vec<u8>> {
        encode_sealed("key", KV_V2, key, self)
    }

    /// Decodes a v1 or v2 record stored under `key`.
    pub(crate) fn decode(key: &[u8], bytes: &'a [u8]) -> Result<KvRecord<'a>> {
        match version("key", bytes)? {
            (KV_V1, b) => body("key", b),
            (KV_V2, _) => body("key", unseal("key", key, bytes)?),
            (v, _) => Err(corrupted("key", format_args!("unknown version {v}"))),
        }
    }
}

/// The lease id (0: none) that the key record `bytes` names, read from the record's first field
/// alone: neither the value nor the checksum is looked at, so a damaged record may give a wrong
/// id. `None` if even that field does not decode. For counting keys without reading them.
pub(crate) fn kv_lease(bytes: &[u8]) -> Option<u64> {
    match bytes.split_first() {
        Some((&(KV_V1 | KV_V2), body)) => postcard::take_from_bytes::<u64>(body)
            .ok()
            .map(|(lease, _)| lease),
        _ => None,
    }
}

/// Decodes `bytes` as each record type and checks that whatever decodes re-encodes to a record
/// that decodes to the same value. For the `records` fuzz target; never panics.
///
/// The table key a record is checked against is taken from the input: its first byte `n` (mod
/// 16) says how many of the bytes after it are the key (a lease id: those bytes, little-endian,
/// padded with zeros), and the rest is the record.
pub(crate) fn check_roundtrip(bytes: &[u8]) -> std::result::Result<(), String> {
    let (key, record) = match bytes.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n % 16).min(rest.len())),
        None => (&[][..], bytes),
    };
    let mut id = [0; 8];
    for (to, from) in id.iter_mut().zip(key) {
        *to = *from;
    }
    let id = u64::from_le_bytes(id);
    if let Ok(r) = LeaseRecord::decode(id, record) {
        let again = r
            .encode(id)
            .and_then(|b| LeaseRecord::decode(id, &b).map(|x| x == r));
        if !matches!(again, Ok(true)) {
            return Err(format!("lease record {r:?} does not round-trip"));
        }
    }
    if let Ok(r) = KvRecord::decode(key, record) {
        let encoded = r.encode(key).map_err(|e| e.to_string())?;
        if KvRecord::decode(key, &encoded).ok() != Some(r) {
            return Err(format!("key record {r:?} does not round-trip"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(ttl_nanos: u64, granted_revision: u64, uptime: u64, wall: u64) -> LeaseRecord {
        LeaseRecord {
            ttl_nanos,
            granted_revision,
            checkpoint: Some(Checkpoint {
                uptime_deadline: uptime,
                wall_deadline: wall,
            }),
        }
    }

    fn kv() -> KvRecord<'static> {
        KvRecord {
            lease: 3,
            create_revision: 1,
            mod_revision: u64::MAX,
            version: 2,
            value: b"10001",
        }
    }

    #[test]
    fn records_round_trip() {
        let l = v2(10_000_000_000, 7, 12_000_000_000, 1_700_000_010_000_000_000);
        let bytes = l.encode(9).unwrap();
        assert_eq!(bytes[0], LEASE_V3);
        assert_eq!(LeaseRecord::decode(9, &bytes).unwrap(), l);
        let max = v2(u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(
            LeaseRecord::decode(u64::MAX, &max.encode(u64::MAX).unwrap()).unwrap(),
            max
        );
        let bytes = kv().encode(b"/a").unwrap();
        assert_eq!(bytes[0], KV_V2);
        assert_eq!(KvRecord::decode(b"/a", &bytes).unwrap(), kv());
    }

    #[test]
    fn v1_records_decode_without_a_checkpoint_and_stay_v1() {
        // As format 1 wrote them: version 1, then the TTL and the revision as varints.
        let bytes = [LEASE_V1, 0x80, 0xc8, 0xaf, 0xa0, 0x25, 7];
        let r = LeaseRecord::decode(1, &bytes).unwrap();
        assert_eq!(
            r,
            LeaseRecord {
                ttl_nanos: 10_000_000_000,
                granted_revision: 7,
                checkpoint: None,
            }
        );
        assert_eq!(r.encode(1).unwrap(), bytes);
        // The same fields in v3 carry the checkpoint after them, then the checksum.
        let with = LeaseRecord {
            checkpoint: Some(Checkpoint {
                uptime_deadline: 1,
                wall_deadline: 2,
            }),
            ..r
        };
        let v3 = with.encode(1).unwrap();
        assert_eq!(
            v3[..v3.len() - CRC_LEN],
            [&[LEASE_V3], &bytes[1..], &[1, 2]].concat()
        );
    }

    #[test]
    fn records_of_format_2_still_decode() {
        // v2 lease records and v1 key records, as format 2 wrote them: no checksum.
        let lease = [LEASE_V2, 0x80, 0xc8, 0xaf, 0xa0, 0x25, 7, 1, 2];
        assert_eq!(
            LeaseRecord::decode(5, &lease).unwrap(),
            LeaseRecord {
                ttl_nanos: 10_000_000_000,
                granted_revision: 7,
                checkpoint: Some(Checkpoint {
                    uptime_deadline: 1,
                    wall_deadline: 2,
                }),
            }
        );
        let key = [KV_V1, 3, 1, 2, 2, 1, b'x'];
        assert_eq!(
            KvRecord::decode(b"/any", &key).unwrap(),
            KvRecord {
                lease: 3,
                create_revision: 1,
                mod_revision: 2,
                version: 2,
                value: b"x",
            }
        );
    }

    #[test]
    fn a_key_records_lease_is_read_from_its_first_field_alone() {
        let big = KvRecord {
            lease: u64::MAX,
            ..kv()
        };
        for (r, lease) in [(kv(), 3), (big, u64::MAX)] {
            let bytes = r.encode(b"/a").unwrap();
            assert_eq!(kv_lease(&bytes), Some(lease));
            // Neither the value nor the checksum is looked at.
            assert_eq!(kv_lease(&bytes[..3]), Some(lease).filter(|&l| l < 128));
        }
        assert_eq!(kv_lease(&[KV_V1, 0, 1, 2, 2, 1, b'x']), Some(0));
        assert_eq!(kv_lease(&[]), None);
        assert_eq!(kv_lease(&[KV_V2]), None);
        assert_eq!(kv_lease(&[LEASE_V3, 3]), None);
        assert_eq!(kv_lease(&[KV_V2, 0x80]), None);
    }

    #[test]
    fn the_checksum_is_crc_32_ieee_of_key_then_record() {
        // The check value of CRC-32 (IEEE), as zlib computes it: the format names it.
        assert_eq!(crc(b"1234", b"56789"), 0xCBF4_3926);
        let bytes = kv().encode(b"/k").unwrap();
        let (record, sum) = bytes.split_at(bytes.len() - CRC_LEN);
        let mut h = crc32fast::Hasher::new();
        h.update(b"/k");
        h.update(record);
        assert_eq!(sum, h.finalize().to_le_bytes());
    }

    #[test]
    fn any_changed_bit_or_another_key_is_a_checksum_mismatch() {
        let lease = v2(17_000_000_000, 4, 5, 6).encode(7).unwrap();
        let key = kv().encode(b"/k/1").unwrap();
        for i in 0..lease.len() * 8 {
            let mut bad = lease.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                matches!(LeaseRecord::decode(7, &bad), Err(Error::Corrupted(_))),
                "bit {i}: {bad:?}"
            );
        }
        for i in 0..key.len() * 8 {
            let mut bad = key.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                matches!(KvRecord::decode(b"/k/1", &bad), Err(Error::Corrupted(_))),
                "bit {i}: {bad:?}"
            );
        }
        // The same bytes under another key (a damaged key, or a record moved).
        assert!(matches!(
            LeaseRecord::decode(8, &lease),
            Err(Error::Corrupted(_))
        ));
        assert!(matches!(
            KvRecord::decode(b"/k/3", &key),
            Err(Error::Corrupted(_))
        ));
    }

    #[test]
    fn bad_bytes_are_corrupted_errors() {
        let l = LeaseRecord {
            ttl_nanos: 1,
            granted_revision: 2,
            checkpoint: None,
        }
        .encode(1)
        .unwrap();
        let l3 = v2(1, 2, 3, 4).encode(1).unwrap();
        for bad in [
            vec![],
            vec![9],
            vec![4, 1, 2, 3, 4],
            vec![LEASE_V1],
            vec![LEASE_V2],
            vec![LEASE_V3],
            vec![LEASE_V3, 0, 0, 0, 0],
            [l.clone(), vec![0]].concat(),
            [l3.clone(), vec![0]].concat(),
            l3[..l3.len() - 1].to_vec(),
            [&[LEASE_V2], &l[1..]].concat(),  // a v1 body under v2
            [&[LEASE_V1], &l3[1..]].concat(), // a v3 body under v1
            vec![
                LEASE_V1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ] {
            assert!(
                matches!(LeaseRecord::decode(1, &bad), Err(Error::Corrupted(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            KvRecord::decode(b"", &l),
            Err(Error::Corrupted(_))
        ));
        assert!(matches!(
            KvRecord::decode(b"", &l3),
            Err(Error::Corrupted(_))
        ));
        assert!(matches!(
            KvRecord::decode(b"", &[KV_V2]),
            Err(Error::Corrupted(_))
        ));
    }

    #[test]
    fn the_fuzz_check_accepts_every_version() {
        let v1 = LeaseRecord {
            ttl_nanos: 5,
            granted_revision: 6,
            checkpoint: None,
        };
        // Key length 2, key [7, 0] (lease id 7), then the record.
        for r in [v1, v2(5, 6, 7, 8)] {
            let input = [&[2, 7, 0][..], &r.encode(7).unwrap()].concat();
            assert_eq!(check_roundtrip(&input), Ok(()));
        }
        let input = [&[2, 7, 0][..], &kv().encode(&[7, 0]).unwrap()].concat();
        assert_eq!(check_roundtrip(&input), Ok(()));
    }
}
