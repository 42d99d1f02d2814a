//! Encoding of the records stored in redb: one version byte, then the record in postcard.
//!
//! Each record type has its own version byte so that it can change without rewriting the others.
//! Decoders accept exactly one encoding per version and reject anything else (unknown version,
//! truncated bytes, trailing bytes) with [`Error::Corrupted`]; they never panic.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version byte of [`LeaseRecord`] as written by this build.
const LEASE_V1: u8 = 1;
/// Version byte of [`KvRecord`] as written by this build.
const KV_V1: u8 = 1;

/// A lease as stored in the `leases` table (keyed by id).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    /// Granted TTL in nanoseconds (after raising to the minimum).
    pub ttl_nanos: u64,
    /// Revision of the database when the lease was granted.
    pub granted_revision: u64,
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

fn decode<'a, T: Deserialize<'a>>(what: &str, version: u8, bytes: &'a [u8]) -> Result<T> {
    let corrupted = |why: String| Error::Corrupted(format!("{what} record: {why}"));
    match bytes.split_first() {
        None => Err(corrupted("empty".into())),
        Some((&v, _)) if v != version => Err(corrupted(format!("unknown version {v}"))),
        Some((_, body)) => match postcard::take_from_bytes::<T>(body) {
            Ok((record, [])) => Ok(record),
            Ok((_, rest)) => Err(corrupted(format!("{} trailing bytes", rest.len()))),
            Err(e) => Err(corrupted(e.to_string())),
        },
    }
}

impl LeaseRecord {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        encode("lease", LEASE_V1, self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<LeaseRecord> {
        decode("lease", LEASE_V1, bytes)
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

    #[test]
    fn records_round_trip() {
        let l = LeaseRecord {
            ttl_nanos: 10_000_000_000,
            granted_revision: 7,
        };
        assert_eq!(LeaseRecord::decode(&l.encode().unwrap()).unwrap(), l);
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
    fn bad_bytes_are_corrupted_errors() {
        let l = LeaseRecord {
            ttl_nanos: 1,
            granted_revision: 2,
        }
        .encode()
        .unwrap();
        for bad in [
            vec![],
            vec![9],
            vec![LEASE_V1],
            [l.clone(), vec![0]].concat(),
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
    }
}
