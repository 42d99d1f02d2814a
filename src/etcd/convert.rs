//! Conversions between `etcd-client`'s types and ours: errors, TTLs, ids, key-values and
//! transactions.

use std::time::Duration;

use etcd_client as etcd;

use crate::builder::MAX_TTL;
use crate::error::{Error, Result};
use crate::lease::{KeyValue, LeaseId, Revision};
use crate::txn::{CmpOp, Compare, Op, OpKind, OpResponse, Target};

/// What an etcd error means to us, before the context (which lease) is added.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    LeaseNotFound,
    LeaseExists,
    TtlTooLarge,
    EmptyKey,
    DuplicateKey,
    Unavailable,
    Other,
}

/// Classifies an error of `etcd-client`. etcd reports its conditions as gRPC statuses whose
/// messages are fixed strings (`etcdserver: requested lease not found`, ...), the same in
/// 3.4 to 3.6; transport failures and the gRPC codes of an unreachable or leaderless cluster
/// are [`Kind::Unavailable`].
pub(crate) fn classify(e: &etcd::Error) -> Kind {
    match e {
        etcd::Error::GRpcStatus(status) => {
            classify_status(i32::from(status.code()), status.message())
        }
        etcd::Error::LeaseKeepAliveError(msg) if msg.contains("lease not found") => {
            Kind::LeaseNotFound
        }
        etcd::Error::TransportError(_)
        | etcd::Error::IoError(_)
        | etcd::Error::LeaseKeepAliveError(_)
        | etcd::Error::WatchError(_) => Kind::Unavailable,
        _ => Kind::Other,
    }
}

/// gRPC's codes for a call that was cancelled, ran out of time, or found no server.
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const DEADLINE_EXCEEDED: i32 = 4;
const RESOURCE_EXHAUSTED: i32 = 8;
pub(crate) const UNAVAILABLE: i32 = 14;

/// Classifies a gRPC status by its code and message.
fn classify_status(code: i32, msg: &str) -> Kind {
    if msg.contains("requested lease not found") {
        Kind::LeaseNotFound
    } else if msg.contains("lease already exists") {
        Kind::LeaseExists
    } else if msg.contains("too large lease TTL") {
        Kind::TtlTooLarge
    } else if msg.contains("key is not provided") {
        Kind::EmptyKey
    } else if msg.contains("duplicate key given in txn request") {
        Kind::DuplicateKey
    } else if matches!(code, CANCELLED | DEADLINE_EXCEEDED | UNAVAILABLE)
        || (code == UNKNOWN && msg.contains("transport"))
        || msg.contains("no leader")
        || msg.contains("leader changed")
        || msg.contains("request timed out")
    {
        Kind::Unavailable
    } else {
        Kind::Other
    }
}

/// Our error for an etcd error; `lease` is the lease the call was about, if any.
pub(crate) fn error(e: etcd::Error, lease: Option<LeaseId>) -> Error {
    match (classify(&e), lease) {
        (Kind::LeaseNotFound, Some(id)) => Error::LeaseNotFound(id),
        (Kind::LeaseExists, Some(id)) => Error::LeaseExists(id),
        (Kind::EmptyKey, _) => Error::InvalidKey("keys must not be empty"),
        (Kind::DuplicateKey, _) => {
            Error::InvalidKey("a transaction branch writes the same key twice")
        }
        (Kind::Unavailable, _) => Error::Unavailable(Box::new(e)),
        _ => Error::Backend(Box::new(e)),
    }
}

/// etcd's default request size limit (`--max-request-bytes`, 1.5 MiB), reported when its error
/// does not say the limit.
pub(crate) const DEFAULT_MAX_REQUEST: usize = 1_572_864;

/// If `e` is etcd refusing a request as too large, the limit it names (or etcd's default):
/// either etcd's own check (`etcdserver: request is too large`) or gRPC's message size limit
/// (`RESOURCE_EXHAUSTED`, "received message larger than max (LEN vs. MAX)").
pub(crate) fn too_large(e: &Error) -> Option<usize> {
    let Error::Backend(source) = e else {
        return None;
    };
    let etcd::Error::GRpcStatus(status) = source.downcast_ref::<etcd::Error>()? else {
        return None;
    };
    too_large_message(i32::from(status.code()), status.message())
}

fn too_large_message(code: i32, msg: &str) -> Option<usize> {
    if msg.contains("request is too large") {
        return Some(DEFAULT_MAX_REQUEST);
    }
    if code != RESOURCE_EXHAUSTED || !msg.contains("larger than max") {
        return None;
    }
    let max = msg
        .rsplit("vs.")
        .next()
        .and_then(|tail| tail.trim().trim_end_matches(')').trim().parse().ok());
    Some(max.unwrap_or(DEFAULT_MAX_REQUEST))
}

/// The error of a call that did not finish within `limit`.
pub(crate) fn timed_out(limit: Duration) -> Error {
    Error::Unavailable(format!("no answer from etcd within {limit:?}").into())
}

/// A TTL in etcd's whole seconds, rounded up so that no lease lives shorter than asked.
///
/// # Errors
/// [`Error::TtlOutOfRange`] above [`MAX_TTL`], etcd's maximum too.
pub(crate) fn ttl_secs(ttl: Duration) -> Result<i64> {
    if ttl > MAX_TTL {
        return Err(Error::TtlOutOfRange { ttl, max: MAX_TTL });
    }
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    // At most MAX_TTL's 9e9 s: fits an i64.
    Ok(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// A duration from etcd's seconds (negative: zero).
pub(crate) fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// A lease id as etcd spells it.
pub(crate) fn raw_id(id: LeaseId) -> i64 {
    // LeaseId is at most i64::MAX.
    i64::try_from(id.get()).unwrap_or(i64::MAX)
}

/// A lease id from etcd: `None` for 0 (no lease) and negative values.
pub(crate) fn lease_id(raw: i64) -> Option<LeaseId> {
    u64::try_from(raw).ok().and_then(LeaseId::new)
}

/// A revision from etcd's (never negative in practice).
pub(crate) fn revision(raw: i64) -> Revision {
    Revision::new(u64::try_from(raw).unwrap_or(0))
}

/// The revision in a response header (0 if the header is missing).
pub(crate) fn header_revision(header: Option<&etcd::ResponseHeader>) -> Revision {
    revision(header.map_or(0, etcd::ResponseHeader::revision))
}

/// Our key-value from etcd's.
pub(crate) fn key_value(kv: &etcd::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        lease: lease_id(kv.lease()),
        create_revision: revision(kv.create_revision()),
        mod_revision: revision(kv.mod_revision()),
        version: u64::try_from(kv.version()).unwrap_or(0),
    }
}

fn cmp_op(op: CmpOp) -> etcd::CompareOp {
    match op {
        CmpOp::Equal => etcd::CompareOp::Equal,
        CmpOp::NotEqual => etcd::CompareOp::NotEqual,
        CmpOp::Less => etcd::CompareOp::Less,
        CmpOp::Greater => etcd::CompareOp::Greater,
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// etcd's comparison for ours. A missing key has version, create and mod revision 0 and lease
/// 0 on both sides, and a value comparison on it is false on both: `exists` is "create
/// revision > 0", `absent` is "create revision = 0".
pub(crate) fn compare(c: &Compare) -> etcd::Compare {
    let key = range_start(&c.key, c.range_end.is_some());
    let compare = match &c.target {
        Target::Exists(true) => etcd::Compare::create_revision(key, etcd::CompareOp::Greater, 0),
        Target::Exists(false) => etcd::Compare::create_revision(key, etcd::CompareOp::Equal, 0),
        Target::Value(op, v) => etcd::Compare::value(key, cmp_op(*op), v.clone()),
        Target::Version(op, n) => etcd::Compare::version(key, cmp_op(*op), int(*n)),
        Target::CreateRevision(op, n) => etcd::Compare::create_revision(key, cmp_op(*op), int(*n)),
        Target::ModRevision(op, n) => etcd::Compare::mod_revision(key, cmp_op(*op), int(*n)),
        Target::Lease(op, n) => etcd::Compare::lease(key, cmp_op(*op), int(*n)),
    };
    match &c.range_end {
        None => compare,
        Some(end) => compare.with_range(range_end(end.as_deref())),
    }
}

/// etcd's first key for a range from `key` (`ranged`): etcd refuses an empty key, and `"\0"`
/// is the first key there can be.
fn range_start(key: &[u8], ranged: bool) -> Vec<u8> {
    if ranged && key.is_empty() {
        vec![0]
    } else {
        key.to_vec()
    }
}

/// etcd's `range_end` for ours: `"\0"` for "no end".
fn range_end(end: Option<&[u8]>) -> Vec<u8> {
    end.map_or_else(|| vec![0], <[u8]>::to_vec)
}

/// etcd's transaction for ours.
pub(crate) fn txn(txn: &crate::Txn) -> etcd::Txn {
    etcd::Txn::new()
        .when(txn.compares.iter().map(compare).collect::<Vec<_>>())
        .and_then(txn.then.iter().map(op).collect::<Vec<_>>())
        .or_else(txn.otherwise.iter().map(op).collect::<Vec<_>>())
}

/// etcd's op for ours.
pub(crate) fn op(op: &Op) -> etcd::TxnOp {
    let key = op.key.clone();
    match &op.kind {
        OpKind::Put { value, lease } => etcd::TxnOp::put(
            key,
            value.clone(),
            lease.map(|id| etcd::PutOptions::new().with_lease(raw_id(id))),
        ),
        OpKind::Delete => etcd::TxnOp::delete(key, None),
        OpKind::Get => etcd::TxnOp::get(key, None),
        OpKind::Range => etcd::TxnOp::get(key, Some(etcd::GetOptions::new().with_prefix())),
        OpKind::RangeBetween { end } => etcd::TxnOp::get(
            range_start(&key, true),
            Some(etcd::GetOptions::new().with_range(range_end(end.as_deref()))),
        ),
        OpKind::DeleteRange { end } => etcd::TxnOp::delete(
            range_start(&key, true),
            Some(
                etcd::DeleteOptions::new()
                    .with_range(range_end(end.as_deref()))
                    .with_prev_key(),
            ),
        ),
        OpKind::Txn(nested) => etcd::TxnOp::txn(txn(nested)),
    }
}

/// Our response for etcd's response to one op (`op`, which says whether a read was a range).
pub(crate) fn op_response(op: Option<&Op>, r: &etcd::TxnOpResponse) -> OpResponse {
    match r {
        etcd::TxnOpResponse::Get(g)
            if op.is_some_and(|op| {
                matches!(op.kind, OpKind::Range | OpKind::RangeBetween { .. })
            }) =>
        {
            OpResponse::Range(g.kvs().iter().map(key_value).collect())
        }
        etcd::TxnOpResponse::Delete(d)
            if op.is_some_and(|op| matches!(op.kind, OpKind::DeleteRange { .. })) =>
        {
            OpResponse::DeleteRange(d.prev_kvs().iter().map(key_value).collect())
        }
        etcd::TxnOpResponse::Put(_) => OpResponse::Put,
        etcd::TxnOpResponse::Delete(d) => OpResponse::Delete {
            existed: d.deleted() > 0,
        },
        etcd::TxnOpResponse::Get(g) => OpResponse::Get(g.kvs().first().map(key_value)),
        etcd::TxnOpResponse::Txn(t) => {
            let ops = match op.map(|op| &op.kind) {
                Some(OpKind::Txn(nested)) if t.succeeded() => nested.then.as_slice(),
                Some(OpKind::Txn(nested)) => nested.otherwise.as_slice(),
                _ => &[],
            };
            OpResponse::Txn {
                succeeded: t.succeeded(),
                responses: t
                    .op_responses()
                    .iter()
                    .enumerate()
                    .map(|(i, r)| op_response(ops.get(i), r))
                    .collect(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_seconds_and_respect_the_maximum() {
        assert_eq!(ttl_secs(Duration::ZERO).unwrap(), 0);
        assert_eq!(ttl_secs(Duration::from_millis(1)).unwrap(), 1);
        assert_eq!(ttl_secs(Duration::from_millis(2_001)).unwrap(), 3);
        assert_eq!(ttl_secs(Duration::from_secs(5)).unwrap(), 5);
        assert_eq!(ttl_secs(MAX_TTL).unwrap(), 9_000_000_000);
        assert!(matches!(
            ttl_secs(MAX_TTL + Duration::from_secs(1)),
            Err(Error::TtlOutOfRange { .. })
        ));
    }

    #[test]
    fn lease_ids_map_both_ways() {
        let id = LeaseId::new(7).unwrap();
        assert_eq!(lease_id(raw_id(id)), Some(id));
        assert_eq!(lease_id(0), None);
        assert_eq!(lease_id(-3), None);
        assert_eq!(raw_id(LeaseId::MAX), i64::MAX);
    }

    #[test]
    fn etcd_statuses_are_classified_by_message_then_code() {
        let cases = [
            (
                5,
                "etcdserver: requested lease not found",
                Kind::LeaseNotFound,
            ),
            (9, "etcdserver: lease already exists", Kind::LeaseExists),
            (11, "etcdserver: too large lease TTL", Kind::TtlTooLarge),
            (3, "etcdserver: key is not provided", Kind::EmptyKey),
            (
                3,
                "etcdserver: duplicate key given in txn request",
                Kind::DuplicateKey,
            ),
            (14, "connection refused", Kind::Unavailable),
            (4, "deadline has elapsed", Kind::Unavailable),
            (14, "etcdserver: no leader", Kind::Unavailable),
            (2, "transport error", Kind::Unavailable),
            (7, "etcdserver: permission denied", Kind::Other),
            (2, "something else", Kind::Other),
        ];
        for (code, msg, kind) in cases {
            assert_eq!(classify_status(code, msg), kind, "{msg}");
        }
    }

    #[test]
    fn oversized_requests_are_recognised_with_their_limit() {
        assert_eq!(
            too_large_message(
                8,
                "grpc: received message larger than max (2100035 vs. 2097152)"
            ),
            Some(2_097_152)
        );
        assert_eq!(
            too_large_message(3, "etcdserver: request is too large"),
            Some(DEFAULT_MAX_REQUEST)
        );
        assert_eq!(too_large_message(8, "etcdserver: too many requests"), None);
        assert_eq!(too_large_message(2, "larger than max (1 vs. 2)"), None);
    }

    #[test]
    fn etcd_errors_get_their_lease_in_context() {
        let id = LeaseId::new(9).unwrap();
        let gone = etcd::Error::LeaseKeepAliveError("lease not found".into());
        assert!(matches!(error(gone, Some(id)), Error::LeaseNotFound(i) if i == id));
        let broken = etcd::Error::WatchError("stream closed".into());
        assert!(matches!(error(broken, None), Error::Unavailable(_)));
        let odd = etcd::Error::InvalidArgs("x".into());
        assert!(matches!(error(odd, None), Error::Backend(_)));
    }
}
