//! The KV service: Range, Put, DeleteRange, Txn and Compact over the lessor's keys.
//!
//! Every request becomes reads of the lessor or one lessor transaction, so that what etcd does
//! atomically stays atomic: a put that returns its previous value reads it in the transaction
//! that writes; a delete of a range deletes every key of it at one revision. What the engine
//! cannot do (read an older revision, keep a key's value or lease inside a transaction) is
//! refused with an error, never answered approximately.

use lessor::{CmpOp, Compare, LeaseId, Op, OpResponse, Revision};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::errors;
use crate::proto::etcdserverpb::{
    self as pb, compare, kv_server, range_request, request_op, response_op,
};
use crate::proto::mvccpb;

/// Our one member's cluster id, in every response header.
pub(crate) const CLUSTER_ID: u64 = 0x6c65_7373_6f72_0001;
/// Our one member's id, in every response header (and the leader's id in `Status`).
pub(crate) const MEMBER_ID: u64 = 0x6c65_7373_6f72_0002;

/// How often a put with `ignore_value`/`ignore_lease` retries when the key changes between
/// its read and its write, before giving up.
const PUT_ATTEMPTS: usize = 64;

/// The header of a response given at `revision`.
pub(crate) fn header(revision: Revision) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: CLUSTER_ID,
        member_id: MEMBER_ID,
        revision: rev(revision),
        raft_term: 1,
    })
}

/// A revision on the wire (revisions never reach `i64::MAX`; saturates if one did).
pub(crate) fn rev(revision: Revision) -> i64 {
    i64::try_from(revision.get()).unwrap_or(i64::MAX)
}

/// A key as etcd sends it.
pub(crate) fn to_kv(kv: &lessor::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key.clone(),
        create_revision: rev(kv.create_revision),
        mod_revision: rev(kv.mod_revision),
        version: i64::try_from(kv.version).unwrap_or(i64::MAX),
        value: kv.value.clone(),
        lease: kv.lease.map_or(0, |id| id.get().cast_signed()),
    }
}

/// etcd's `[key, range_end)` as ours: the start, and the end (`None`: no end). An empty
/// `range_end` is the key alone; `"\0"` is every key from `key` on.
///
/// # Errors
/// etcd's "key is not provided" for an empty key.
pub(crate) fn key_range(
    key: &[u8],
    range_end: &[u8],
) -> Result<(Vec<u8>, Option<Vec<u8>>), Status> {
    if key.is_empty() {
        return Err(errors::empty_key());
    }
    let end = match range_end {
        [] => Some(key_end(key)),
        [0] => None,
        end => Some(end.to_vec()),
    };
    Ok((key.to_vec(), end))
}

/// The first key after `key` alone: `key` followed by a zero byte.
pub(crate) fn key_end(key: &[u8]) -> Vec<u8> {
    let mut end = Vec::with_capacity(key.len() + 1);
    end.extend_from_slice(key);
    end.push(0);
    end
}

/// Whether `key` is in `[start, end)`.
pub(crate) fn in_range(key: &[u8], start: &[u8], end: Option<&[u8]>) -> bool {
    key >= start && end.is_none_or(|end| key < end)
}

/// The lease of a put: 0 is none; a negative id names no lease that can exist.
fn lease_arg(lease: i64) -> Result<Option<LeaseId>, Status> {
    match lease {
        0 => Ok(None),
        id => u64::try_from(id)
            .ok()
            .and_then(LeaseId::new)
            .map(Some)
            .ok_or_else(errors::lease_not_found),
    }
}

/// A put with or without a lease.
fn put_op(key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Op {
    match lease {
        Some(id) => Op::put_with_lease(key, value, id),
        None => Op::put(key, value),
    }
}

/// Refuses a read at any revision but the current one: the engine keeps no older versions.
fn check_revision(asked: i64, current: Revision) -> Result<(), Status> {
    let current = rev(current);
    if asked > current {
        Err(errors::future_rev())
    } else if asked > 0 && asked < current {
        Err(errors::compacted())
    } else {
        Ok(())
    }
}

/// The sort a range asks for, as etcd reads it: an unknown target is the key, an unknown order
/// none, and a target other than the key with no order is ascending.
fn sort_of(req: &pb::RangeRequest) -> (range_request::SortTarget, range_request::SortOrder) {
    let target = range_request::SortTarget::try_from(req.sort_target)
        .unwrap_or(range_request::SortTarget::Key);
    let mut order = range_request::SortOrder::try_from(req.sort_order)
        .unwrap_or(range_request::SortOrder::None);
    // Keys come in key order; any other target is sorted ascending unless told otherwise.
    if target != range_request::SortTarget::Key && order == range_request::SortOrder::None {
        order = range_request::SortOrder::Ascend;
    }
    (target, order)
}

/// How the engine reads just what `req` returns ([`Lessor::range_page`](lessor::Lessor::range_page)),
/// when it can: sorted by key (or not sorted: key order) and without revision bounds. Any other
/// sort or a revision bound needs every key of the range (as it does on etcd): `None`.
fn page_options(req: &pb::RangeRequest) -> Option<lessor::RangeOptions> {
    let (target, order) = sort_of(req);
    let bounded = [
        req.min_mod_revision,
        req.max_mod_revision,
        req.min_create_revision,
        req.max_create_revision,
    ]
    .iter()
    .any(|&r| r != 0);
    if target != range_request::SortTarget::Key || bounded {
        return None;
    }
    let mut options = lessor::RangeOptions::new()
        .descending(order == range_request::SortOrder::Descend)
        .keys_only(req.keys_only);
    if req.count_only {
        options = options.limit(0);
    } else if let Ok(limit) = usize::try_from(req.limit)
        && limit > 0
    {
        options = options.limit(limit);
    }
    Some(options)
}

/// A range's answer from the page the engine read with [`page_options`]: the same answer as
/// [`range_response`] gives from the whole range.
fn page_response(req: &pb::RangeRequest, page: lessor::Page) -> pb::RangeResponse {
    pb::RangeResponse {
        header: header(page.revision),
        kvs: page.kvs.iter().map(to_kv).collect(),
        more: page.more && !req.count_only,
        count: i64::try_from(page.count).unwrap_or(i64::MAX),
    }
}

/// A range's answer from the keys of its range (in key order), as etcd gives it: filtered by
/// the revision bounds, sorted, limited, counted, with or without values.
fn range_response(
    req: &pb::RangeRequest,
    mut kvs: Vec<lessor::KeyValue>,
    revision: Revision,
) -> pb::RangeResponse {
    let count = i64::try_from(kvs.len()).unwrap_or(i64::MAX);
    let bound = |min: i64, max: i64, r: Revision| {
        let r = rev(r);
        (min == 0 || r >= min) && (max == 0 || r <= max)
    };
    kvs.retain(|kv| {
        bound(req.min_mod_revision, req.max_mod_revision, kv.mod_revision)
            && bound(
                req.min_create_revision,
                req.max_create_revision,
                kv.create_revision,
            )
    });
    let (target, order) = sort_of(req);
    let by = |a: &lessor::KeyValue, b: &lessor::KeyValue| match target {
        range_request::SortTarget::Key => a.key.cmp(&b.key),
        range_request::SortTarget::Version => a.version.cmp(&b.version),
        range_request::SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        range_request::SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        range_request::SortTarget::Value => a.value.cmp(&b.value),
    };
    match order {
        range_request::SortOrder::None => {}
        range_request::SortOrder::Ascend => kvs.sort_by(by),
        range_request::SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
    }
    let mut more = false;
    if let Ok(limit) = usize::try_from(req.limit)
        && limit > 0
        && kvs.len() > limit
    {
        kvs.truncate(limit);
        more = true;
    }
    if req.count_only {
        kvs.clear();
        more = false;
    }
    pb::RangeResponse {
        header: header(revision),
        kvs: kvs
            .iter()
            .map(|kv| {
                let mut kv = to_kv(kv);
                if req.keys_only {
                    kv.value.clear();
                }
                kv
            })
            .collect(),
        more,
        count,
    }
}

/// A range's answer: read a page at a time when the engine can ([`page_options`]), the whole
/// range otherwise.
fn read_range(engine: &Engine, req: &pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
    let Some(options) = page_options(req) else {
        return read_whole_range(engine, req);
    };
    let (start, end) = key_range(&req.key, &req.range_end)?;
    let page = engine.range_page(&start, end.as_deref(), options)?;
    check_revision(req.revision, page.revision)?;
    Ok(page_response(req, page))
}

/// A range's answer from every key of its range.
fn read_whole_range(engine: &Engine, req: &pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
    let (start, end) = key_range(&req.key, &req.range_end)?;
    let snapshot = engine.range(&start, end.as_deref())?;
    check_revision(req.revision, snapshot.revision)?;
    Ok(range_response(req, snapshot.kvs, snapshot.revision))
}

/// The KV service.
#[derive(Clone, Debug)]
pub(crate) struct Kv {
    engine: Engine,
    limits: crate::Limits,
}

impl Kv {
    pub(crate) fn new(engine: Engine, limits: crate::Limits) -> Kv {
        Kv { engine, limits }
    }

    /// etcd's "request is too large" above the limit.
    fn check_size(&self, req: &impl Message) -> Result<(), Status> {
        if req.encoded_len() > self.limits.max_request_bytes {
            return Err(errors::request_too_large());
        }
        Ok(())
    }

    /// A put with `ignore_value` or `ignore_lease`: reads the key, then writes it if it has
    /// not changed since, retrying if it has. Returns the revision and the key as it was.
    async fn put_keeping(
        &self,
        req: &pb::PutRequest,
        lease: Option<LeaseId>,
    ) -> Result<(Revision, lessor::KeyValue), Status> {
        for _ in 0..PUT_ATTEMPTS {
            let snapshot = self.engine.range(&req.key, Some(&key_end(&req.key)))?;
            let Some(old) = snapshot.kvs.into_iter().next() else {
                return Err(errors::key_not_found());
            };
            let value = if req.ignore_value {
                &old.value
            } else {
                &req.value
            };
            let lease = if req.ignore_lease { old.lease } else { lease };
            let txn = lessor::Txn::new()
                .when(Compare::mod_revision(
                    &req.key,
                    CmpOp::Equal,
                    old.mod_revision,
                ))
                .then(put_op(&req.key, value, lease));
            let result = self.engine.txn(txn).await?;
            if result.succeeded {
                return Ok((result.revision, old));
            }
        }
        Err(Status::aborted(
            "lessor: the key kept changing under a put with ignore_value/ignore_lease; retry",
        ))
    }
}

#[tonic::async_trait]
impl kv_server::Kv for Kv {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let req = request.into_inner();
        self.check_size(&req)?;
        Ok(Response::new(read_range(&self.engine, &req)?))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let req = request.into_inner();
        self.check_size(&req)?;
        if req.key.is_empty() {
            return Err(errors::empty_key());
        }
        if req.ignore_value && !req.value.is_empty() {
            return Err(errors::value_provided());
        }
        if req.ignore_lease && req.lease != 0 {
            return Err(errors::lease_provided());
        }
        let lease = lease_arg(req.lease)?;
        let (revision, prev) = if req.ignore_value || req.ignore_lease {
            let (revision, old) = self.put_keeping(&req, lease).await?;
            (revision, Some(old))
        } else {
            // The previous value, read in the transaction that writes.
            let mut txn = lessor::Txn::new();
            if req.prev_kv {
                txn = txn.then(Op::get(&req.key));
            }
            let result = self
                .engine
                .txn(txn.then(put_op(&req.key, &req.value, lease)))
                .await?;
            let prev = match result.responses.first() {
                Some(OpResponse::Get(prev)) if req.prev_kv => prev.clone(),
                _ => None,
            };
            (result.revision, prev)
        };
        Ok(Response::new(pb::PutResponse {
            header: header(revision),
            prev_kv: prev.as_ref().filter(|_| req.prev_kv).map(to_kv),
        }))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        self.check_size(&req)?;
        let (start, end) = key_range(&req.key, &req.range_end)?;
        let txn = lessor::Txn::new().then(Op::delete_range(&start, end.as_deref()));
        let result = self.engine.txn(txn).await?;
        let Some(OpResponse::DeleteRange(deleted)) = result.responses.first() else {
            return Err(Status::internal(
                "lessor: a delete-range without its response",
            ));
        };
        Ok(Response::new(delete_response(
            &req,
            deleted,
            result.revision,
        )))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let req = request.into_inner();
        self.check_size(&req)?;
        let (txn, plan) = convert_txn(&req, &self.limits)?;
        let result = self.engine.txn(txn).await?;
        let steps = if result.succeeded {
            &plan.then
        } else {
            &plan.otherwise
        };
        let responses = responses(steps, result.responses, result.revision)?;
        Ok(Response::new(pb::TxnResponse {
            header: header(result.revision),
            succeeded: result.succeeded,
            responses,
        }))
    }

    /// Accepted at any revision up to the current one: the engine keeps no older versions
    /// (every revision before the current one is, in etcd's terms, compacted already), so
    /// there is nothing to discard.
    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let req = request.into_inner();
        let current = self.engine.revision()?;
        if req.revision > rev(current) {
            return Err(errors::future_rev());
        }
        Ok(Response::new(pb::CompactionResponse {
            header: header(current),
        }))
    }
}

/// A delete-range's answer from the keys it deleted.
fn delete_response(
    req: &pb::DeleteRangeRequest,
    deleted: &[lessor::KeyValue],
    revision: Revision,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: header(revision),
        deleted: i64::try_from(deleted.len()).unwrap_or(i64::MAX),
        prev_kvs: if req.prev_kv {
            deleted.iter().map(to_kv).collect()
        } else {
            Vec::new()
        },
    }
}

/// How to turn the engine's responses to a converted transaction back into etcd's.
#[derive(Debug, Default)]
struct Plan {
    then: Vec<Step>,
    otherwise: Vec<Step>,
}

/// One etcd op, as the engine's responses answer it.
#[derive(Debug)]
enum Step {
    /// One `Range` response.
    Range(pb::RangeRequest),
    /// A `Get` (the previous key) if `prev_kv`, then a `Put`.
    Put { prev_kv: bool },
    /// One `DeleteRange`.
    Delete(pb::DeleteRangeRequest),
    /// One `Txn`.
    Txn(Box<Plan>),
}

/// An etcd transaction as the engine's, with the plan to answer it.
fn convert_txn(
    req: &pb::TxnRequest,
    limits: &crate::Limits,
) -> Result<(lessor::Txn, Plan), Status> {
    let max = limits.max_txn_ops;
    if req.compare.len() > max || req.success.len() > max || req.failure.len() > max {
        return Err(errors::too_many_ops());
    }
    let mut txn = lessor::Txn::new();
    for c in &req.compare {
        txn = txn.when(convert_compare(c)?);
    }
    let mut plan = Plan::default();
    for op in &req.success {
        for o in convert_op(op, &mut plan.then, limits)? {
            txn = txn.then(o);
        }
    }
    for op in &req.failure {
        for o in convert_op(op, &mut plan.otherwise, limits)? {
            txn = txn.otherwise(o);
        }
    }
    Ok((txn, plan))
}

/// An etcd comparison as the engine's.
fn convert_compare(c: &pb::Compare) -> Result<Compare, Status> {
    let op = match compare::CompareResult::try_from(c.result) {
        Ok(compare::CompareResult::Equal) => CmpOp::Equal,
        Ok(compare::CompareResult::Greater) => CmpOp::Greater,
        Ok(compare::CompareResult::Less) => CmpOp::Less,
        Ok(compare::CompareResult::NotEqual) => CmpOp::NotEqual,
        Err(_) => return Err(Status::invalid_argument("lessor: unknown compare result")),
    };
    let key = c.key.as_slice();
    let union = c.target_union.as_ref();
    // A number compared as etcd does (as an i64): below 0, no key's field can equal it or be
    // below it, so the comparison is a constant (spelled as one on a revision nothing has).
    let number = |n: i64, make: &dyn Fn(u64) -> Compare| match u64::try_from(n) {
        Ok(n) => make(n),
        Err(_) => {
            let holds = matches!(op, CmpOp::Greater | CmpOp::NotEqual);
            let never = Revision::new(u64::MAX);
            let op = if holds { CmpOp::NotEqual } else { CmpOp::Equal };
            Compare::create_revision(key, op, never)
        }
    };
    let compare = match compare::CompareTarget::try_from(c.target) {
        Ok(compare::CompareTarget::Version) => {
            let n = match union {
                Some(compare::TargetUnion::Version(n)) => *n,
                _ => 0,
            };
            number(n, &|n| Compare::version(key, op, n))
        }
        Ok(compare::CompareTarget::Create) => {
            let n = match union {
                Some(compare::TargetUnion::CreateRevision(n)) => *n,
                _ => 0,
            };
            number(n, &|n| Compare::create_revision(key, op, Revision::new(n)))
        }
        Ok(compare::CompareTarget::Mod) => {
            let n = match union {
                Some(compare::TargetUnion::ModRevision(n)) => *n,
                _ => 0,
            };
            number(n, &|n| Compare::mod_revision(key, op, Revision::new(n)))
        }
        Ok(compare::CompareTarget::Value) => {
            let v: &[u8] = match union {
                Some(compare::TargetUnion::Value(v)) => v,
                _ => &[],
            };
            Compare::value(key, op, v)
        }
        Ok(compare::CompareTarget::Lease) => {
            let n = match union {
                Some(compare::TargetUnion::Lease(n)) => *n,
                _ => 0,
            };
            number(n, &|n| Compare::lease(key, op, LeaseId::new(n)))
        }
        Err(_) => return Err(Status::invalid_argument("lessor: unknown compare target")),
    };
    Ok(match c.range_end.as_slice() {
        [] => compare,
        [0] => compare.over_range(None),
        end => compare.over_range(Some(end)),
    })
}

/// An etcd op as the engine's ops (one, or two for a put that returns its previous value),
/// adding how to answer it to `steps`.
fn convert_op(
    op: &pb::RequestOp,
    steps: &mut Vec<Step>,
    limits: &crate::Limits,
) -> Result<Vec<Op>, Status> {
    match &op.request {
        Some(request_op::Request::RequestRange(r)) => {
            let (start, end) = key_range(&r.key, &r.range_end)?;
            if r.revision != 0 {
                return Err(errors::unsupported(
                    "a range at a given revision inside a transaction",
                ));
            }
            steps.push(Step::Range(r.clone()));
            Ok(vec![Op::range_between(&start, end.as_deref())])
        }
        Some(request_op::Request::RequestPut(p)) => {
            if p.key.is_empty() {
                return Err(errors::empty_key());
            }
            if p.ignore_value || p.ignore_lease {
                return Err(errors::unsupported(
                    "a put with ignore_value or ignore_lease inside a transaction",
                ));
            }
            let lease = lease_arg(p.lease)?;
            steps.push(Step::Put { prev_kv: p.prev_kv });
            let put = put_op(&p.key, &p.value, lease);
            Ok(if p.prev_kv {
                vec![Op::get(&p.key), put]
            } else {
                vec![put]
            })
        }
        Some(request_op::Request::RequestDeleteRange(d)) => {
            let (start, end) = key_range(&d.key, &d.range_end)?;
            steps.push(Step::Delete(d.clone()));
            Ok(vec![Op::delete_range(&start, end.as_deref())])
        }
        Some(request_op::Request::RequestTxn(t)) => {
            let (txn, plan) = convert_txn(t, limits)?;
            steps.push(Step::Txn(Box::new(plan)));
            Ok(vec![Op::txn(txn)])
        }
        None => Err(Status::invalid_argument(
            "lessor: a transaction op without a request",
        )),
    }
}

/// etcd's responses to the ops of `steps`, from the engine's.
fn responses(
    steps: &[Step],
    answers: Vec<OpResponse>,
    revision: Revision,
) -> Result<Vec<pb::ResponseOp>, Status> {
    let mismatch = || Status::internal("lessor: a transaction's responses do not match its ops");
    let mut it = answers.into_iter();
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        let response = match (step, it.next()) {
            (Step::Range(req), Some(OpResponse::Range(kvs))) => {
                response_op::Response::ResponseRange(range_response(req, kvs, revision))
            }
            (Step::Put { prev_kv }, Some(first)) => {
                let prev = match (prev_kv, first) {
                    (true, OpResponse::Get(prev)) => match it.next() {
                        Some(OpResponse::Put) => prev,
                        _ => return Err(mismatch()),
                    },
                    (false, OpResponse::Put) => None,
                    _ => return Err(mismatch()),
                };
                response_op::Response::ResponsePut(pb::PutResponse {
                    header: header(revision),
                    prev_kv: prev.as_ref().map(to_kv),
                })
            }
            (Step::Delete(req), Some(OpResponse::DeleteRange(deleted))) => {
                response_op::Response::ResponseDeleteRange(delete_response(req, &deleted, revision))
            }
            (
                Step::Txn(plan),
                Some(OpResponse::Txn {
                    succeeded,
                    responses: inner,
                }),
            ) => {
                let steps = if succeeded {
                    &plan.then
                } else {
                    &plan.otherwise
                };
                response_op::Response::ResponseTxn(pb::TxnResponse {
                    header: header(revision),
                    succeeded,
                    responses: responses(steps, inner, revision)?,
                })
            }
            _ => return Err(mismatch()),
        };
        out.push(pb::ResponseOp {
            response: Some(response),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_ranges_map_to_half_open_ranges() {
        assert_eq!(
            key_range(b"a", b"").unwrap(),
            (b"a".to_vec(), Some(b"a\0".to_vec()))
        );
        assert_eq!(key_range(b"a", b"\0").unwrap(), (b"a".to_vec(), None));
        assert_eq!(
            key_range(b"a", b"b").unwrap(),
            (b"a".to_vec(), Some(b"b".to_vec()))
        );
        assert_eq!(
            key_range(b"", b"b").unwrap_err().message(),
            "etcdserver: key is not provided"
        );
        assert!(in_range(b"a\0", b"a", Some(b"b")));
        assert!(!in_range(b"b", b"a", Some(b"b")));
        assert!(in_range(b"zzz", b"a", None));
    }

    #[test]
    fn reads_at_other_revisions_are_refused_with_etcds_errors() {
        let r = Revision::new(5);
        assert!(check_revision(0, r).is_ok());
        assert!(check_revision(5, r).is_ok());
        assert!(check_revision(-3, r).is_ok());
        assert_eq!(
            check_revision(6, r).unwrap_err().message(),
            errors::future_rev().message()
        );
        assert_eq!(
            check_revision(4, r).unwrap_err().message(),
            errors::compacted().message()
        );
    }
}

/// The page path of Range against the whole-range path, on many random requests.
#[cfg(test)]
mod page_tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use super::*;

    /// The bytes keys are made of: two letters, and the extreme bytes.
    const ALPHABET: [u8; 4] = [b'a', b'b', 0x00, 0xff];

    /// A tiny deterministic generator for the store's contents.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    /// Every key of one to three bytes of [`ALPHABET`], most of them present: values of varied
    /// lengths, some overwritten (versions above 1, create and mod revisions apart), some
    /// attached to a lease, some deleted. Half of the writes are in the file, the rest still
    /// in the write buffer (batched durability, not yet flushed).
    fn varied_store() -> Engine {
        let lessor = lessor::Lessor::builder()
            .ticker(false)
            .durability(lessor::Durability::Batched {
                max_delay: Duration::from_secs(3600),
            })
            .open_in_memory()
            .unwrap();
        let lease = lessor.grant(Duration::from_secs(3600)).unwrap().id;
        let mut keys = Vec::new();
        for len in 1..=3u32 {
            for n in 0..4usize.pow(len) {
                let key: Vec<u8> = (0..len).map(|i| ALPHABET[n / 4usize.pow(i) % 4]).collect();
                keys.push(key);
            }
        }
        let mut rng = Lcg(7);
        for round in 0..4 {
            for key in &keys {
                let value: Vec<u8> = (0..rng.below(24)).map(|_| rng.below(256) as u8).collect();
                match rng.below(8) {
                    0 => drop(lessor.delete(key).unwrap()),
                    1 | 2 => drop(lessor.put_with_lease(key, &value, lease).unwrap()),
                    3 if round > 0 => {} // left as it was
                    _ => drop(lessor.put(key, &value).unwrap()),
                }
            }
            if round == 1 {
                lessor.sync().unwrap();
            }
        }
        Engine::new(lessor)
    }

    /// A request's answer, comparable: the response's bytes, or the error's code and message.
    fn outcome(r: Result<pb::RangeResponse, Status>) -> Result<Vec<u8>, (tonic::Code, String)> {
        r.map(|r| r.encode_to_vec())
            .map_err(|s| (s.code(), s.message().to_owned()))
    }

    fn key_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(ALPHABET.to_vec()), 0..=max)
    }

    fn request() -> impl Strategy<Value = pb::RangeRequest> {
        let range_end = prop_oneof![
            2 => Just(Vec::new()),
            2 => Just(vec![0]),
            5 => key_bytes(4),
        ];
        let limit = prop_oneof![
            2 => Just(0i64),
            1 => -3i64..0,
            4 => 1i64..=12,
            1 => Just(1000i64),
            1 => Just(i64::MIN),
            1 => Just(i64::MAX),
        ];
        let sort = (
            prop_oneof![4 => Just(0i32), 1 => -1i32..=6],
            prop_oneof![3 => 0i32..=2, 1 => -1i32..=4],
        );
        let bound = || prop_oneof![6 => Just(0i64), 1 => -2i64..=300];
        let bounds = (bound(), bound(), bound(), bound());
        let revision = prop_oneof![6 => Just(0i64), 1 => -1i64..=300];
        (
            key_bytes(3),
            range_end,
            limit,
            sort,
            (any::<bool>(), any::<bool>()),
            bounds,
            revision,
        )
            .prop_map(
                |(key, range_end, limit, (target, order), (count_only, keys_only), b, revision)| {
                    pb::RangeRequest {
                        key,
                        range_end,
                        limit,
                        revision,
                        sort_order: order,
                        sort_target: target,
                        serializable: false,
                        keys_only,
                        count_only,
                        min_mod_revision: b.0,
                        max_mod_revision: b.1,
                        min_create_revision: b.2,
                        max_create_revision: b.3,
                    }
                },
            )
    }

    #[test]
    fn pages_answer_byte_for_byte_as_whole_ranges() {
        let engine = varied_store();
        let paged = std::cell::Cell::new(0u32);
        let mut runner = TestRunner::new(Config::with_cases(3000));
        runner
            .run(&request(), |req| {
                if page_options(&req).is_some() {
                    paged.set(paged.get() + 1);
                }
                prop_assert_eq!(
                    outcome(read_range(&engine, &req)),
                    outcome(read_whole_range(&engine, &req)),
                    "{:?}",
                    req
                );
                Ok(())
            })
            .unwrap();
        // Both paths were taken, many times each.
        let paged = paged.get();
        assert!((1000..2900).contains(&paged), "{paged} requests paged");
    }

    #[test]
    fn the_edges_of_limits_and_ends() {
        let engine = varied_store();
        let all = read_whole_range(
            &engine,
            &pb::RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            },
        )
        .unwrap();
        assert!(all.count > 40, "{}", all.count);
        let n = all.count;
        let cases = [
            // (limit, descending, count_only, keys_only, range_end, kvs, more)
            (0, false, false, false, vec![0], n, false),
            (-1, true, false, false, vec![0], n, false),
            (n + 1, false, false, true, vec![0], n, false),
            (n, true, false, false, vec![0], n, false),
            (n - 1, true, false, false, vec![0], n - 1, true),
            (3, false, false, false, vec![0], 3, true),
            (3, false, true, false, vec![0], 0, false),
            (3, true, false, true, Vec::new(), 1, false),
        ];
        for (limit, descending, count_only, keys_only, range_end, kvs, more) in cases {
            let req = pb::RangeRequest {
                key: vec![0],
                range_end,
                limit,
                sort_order: if descending { 2 } else { 0 },
                count_only,
                keys_only,
                ..Default::default()
            };
            assert!(page_options(&req).is_some());
            let got = read_range(&engine, &req).unwrap();
            assert_eq!(got, read_whole_range(&engine, &req).unwrap(), "{req:?}");
            assert_eq!((got.kvs.len() as i64, got.more), (kvs, more), "{req:?}");
            if descending && !got.kvs.is_empty() && req.range_end == [0] {
                assert_eq!(got.kvs[0].key, all.kvs[all.kvs.len() - 1].key);
            }
            if keys_only {
                assert!(got.kvs.iter().all(|kv| kv.value.is_empty()));
            }
        }
        // An end at or before the key: nothing, counted as nothing.
        let req = pb::RangeRequest {
            key: b"b".to_vec(),
            range_end: b"a".to_vec(),
            limit: 2,
            ..Default::default()
        };
        let got = read_range(&engine, &req).unwrap();
        assert_eq!((got.kvs.len(), got.count, got.more), (0, 0, false));
    }
}
