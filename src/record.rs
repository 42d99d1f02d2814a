//! Encoding of the records stored in redb: one version byte, then the record in postcard.
//!
//! Each record type has its own version byte so that it can change without rewriting the others.
//! Decoders accept exactly one encoding per version and reject anything else (unknown version,
//! truncated bytes, trailing bytes) with [`Error::Corrupted`]; they never panic.
//!
//! Lease records have two versions: v1 (`ttl_nanos`, `granted_revision`), written by format 1,
//! and v2, which adds a [`Checkpoint`]. This build writes v2 for every record that carries a
//! checkpoint, which is every record it writes itself; a v1 record read from an older file
//! decodes with no checkpoint, and re-encodes as v1, byte for byte the same meaning.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version byte of a [`LeaseRecord`] without a checkpoint (format 1).
const LEASE_V1: u8 = 1;
/// Version byte of a [`LeaseRecord`] with a checkpoint, as written by this build.
const LEASE_V2: u8 = 2;
/// Version byte of [`KvRecord`] as written by this build.
const KV_V1: u8 = 1;

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

fn decode<'a, T: Deserialize<'a>>(what: &str, expected: u8, bytes: &'a [u8]) -> Result<T> {
    match version(what, bytes)? {
        (v, b) if v == expected => body(what, b),
        (v, _) => Err(corrupted(what, format_args!("unknown version {v}"))),
    }
}

impl LeaseRecord {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
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
            Some(c) => encode(
                "lease",
                LEASE_V2,
                &LeaseV2 {
                    ttl_nanos,
                    granted_revision,
                    uptime_deadline: c.uptime_deadline,
                    wall_deadline: c.wall_deadline,
                },
            ),
        }
    }

    /// Decodes a v1 or a v2 record.
    pub(crate) fn decode(bytes: &[u8]) -> Result<LeaseRecord> {
        match version("lease", bytes)? {
            (LEASE_V1, b) => {
                let r: LeaseV1 = body("lease", b)?;
                Ok(LeaseRecord {
                    ttl_nanos: r.ttl_nanos,
                    granted_revision: r.granted_revision,
                    checkpoint: None,
                })
            }
            (LEASE_V2, b) => {
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
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        encode("key", KV_V1, self)
    }

    pub(crate) fn decode(bytes: &'a [u8]) -> Result<KvRecord<'a>> {
        decode("key", KV_V1, bytes)
    }
}

/// Decodes `bytes` as each record type and checks that whatever decodes re-encodes to a record
/// that decodes to the same value. For the `records` fuzz target; never panics.
pub(crate) fn check_roundtrip(bytes: &[u8]) -> std::result::Result<(), String> {
    if let Ok(r) = LeaseRecord::decode(bytes) {
        let again = r
            .encode()
            .and_then(|b| LeaseRecord::decode(&b).map(|x| x == r));
        if !matches!(again, Ok(true)) {
            return Err(format!("lease record {r:?} does not round-trip"));
        }
    }
    if let Ok(r) = KvRecord::decode(bytes) {
        let encoded = r.encode().map_err(|e| e.to_string())?;
        if KvRecord::decode(&encoded).ok() != Some(r) {
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

    #[test]
    fn records_round_trip() {
        let l = v2(10_000_000_000, 7, 12_000_000_000, 1_700_000_010_000_000_000);
        let bytes = l.encode().unwrap();
        assert_eq!(bytes[0], LEASE_V2);
        assert_eq!(LeaseRecord::decode(&bytes).unwrap(), l);
        let max = v2(u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(LeaseRecord::decode(&max.encode().unwrap()).unwrap(), max);
        let kv = KvRecord {
            lease: 3,
            create_revision: 1,
            mod_revision: u64::MAX,
            version: 2,
            value: b"10001",
        };
        let bytes = kv.encode().unwrap();
        assert_eq!(bytes[0], KV_V1);
        assert_eq!(KvRecord::decode(&bytes).unwrap(), kv);
    }

    #[test]
    fn v1_records_decode_without_a_checkpoint_and_stay_v1() {
        // As format 1 wrote them: version 1, then the TTL and the revision as varints.
        let bytes = [LEASE_V1, 0x80, 0xc8, 0xaf, 0xa0, 0x25, 7];
        let r = LeaseRecord::decode(&bytes).unwrap();
        assert_eq!(
            r,
            LeaseRecord {
                ttl_nanos: 10_000_000_000,
                granted_revision: 7,
                checkpoint: None,
            }
        );
        assert_eq!(r.encode().unwrap(), bytes);
        // The same fields in v2 carry the checkpoint after them.
        let with = LeaseRecord {
            checkpoint: Some(Checkpoint {
                uptime_deadline: 1,
                wall_deadline: 2,
            }),
            ..r
        };
        assert_eq!(
            with.encode().unwrap(),
            [&[LEASE_V2], &bytes[1..], &[1, 2]].concat()
        );
    }

    #[test]
    fn bad_bytes_are_corrupted_errors() {
        let l = LeaseRecord {
            ttl_nanos: 1,
            granted_revision: 2,
            checkpoint: None,
        }
        .encode()
        .unwrap();
        let l2 = v2(1, 2, 3, 4).encode().unwrap();
        for bad in [
            vec![],
            vec![9],
            vec![3, 1, 2, 3, 4],
            vec![LEASE_V1],
            vec![LEASE_V2],
            [l.clone(), vec![0]].concat(),
            [l2.clone(), vec![0]].concat(),
            l2[..l2.len() - 1].to_vec(),
            [&[LEASE_V2], &l[1..]].concat(),  // a v1 body under v2
            [&[LEASE_V1], &l2[1..]].concat(), // a v2 body under v1
            vec![
                LEASE_V1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ] {
            assert!(
                matches!(LeaseRecord::decode(&bad), Err(Error::Corrupted(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(KvRecord::decode(&l), Err(Error::Corrupted(_))));
        assert!(matches!(KvRecord::decode(&l2), Err(Error::Corrupted(_))));
    }

    #[test]
    fn the_fuzz_check_accepts_both_lease_versions() {
        let v1 = LeaseRecord {
            ttl_nanos: 5,
            granted_revision: 6,
            checkpoint: None,
        };
        for r in [v1, v2(5, 6, 7, 8)] {
            assert_eq!(check_roundtrip(&r.encode().unwrap()), Ok(()));
        }
    }
}
