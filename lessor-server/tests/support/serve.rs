//! The `serve` fuzz target's input format and check, shared by the target
//! (`fuzz/fuzz_targets/serve.rs`) and the replay of its corpus under `cargo test`
//! (`tests/fuzz_corpus.rs`).
//!
//! An input is a sequence of calls ([`decode`]; [`encode`] is its inverse, for seeds) sent
//! straight to the KV, Lease, Watch, Maintenance and Cluster services, without a socket, over an
//! in-memory lessor with a manual clock and no ticker, under small [`Limits`]. Keep-alive and
//! watch streams get their requests as gRPC frames through tonic's own decoder, as from a
//! connection: well-formed messages, frames that do not decode, and raw bytes that break the
//! framing. Bytes decoded with prost as a unary request are sent when they decode, as a hostile
//! client's message would arrive.
//!
//! [`check`] holds when:
//! - every unary call answers `Ok` or an error whose gRPC code is one etcd gives for that call
//!   (never `INTERNAL` or `UNKNOWN`), and every `Ok` has a header whose revision never goes
//!   back;
//! - a range answers what the whole range (read by a transaction's range op, another path
//!   through the engine) implies: its count, and for a range sorted by key without revision
//!   bounds (the engine's paged read) exactly the first `limit` keys and whether there are
//!   more;
//! - a keep-alive stream answers each request, in order, with the lease's id and a TTL of 0 or
//!   more; one frame that does not decode ends it with an error; opening more streams than
//!   the limit is refused with `RESOURCE_EXHAUSTED`, and closing them frees their places;
//! - a watch stream answers each create with exactly one created response (a refusal is
//!   created and cancelled), each progress request with one progress response, sends events
//!   only for live watches, inside their range, after their start revision, in revision order,
//!   honouring the NOPUT/NODELETE filters; only a stream whose framing was broken ends with
//!   an error, and one sent a frame that does not decode does;
//! - every call and stream answers within 10 s, no task panics, and at the end the lessor's
//!   own integrity check finds no problem and it closes cleanly.
//!
//! Every call's size is bounded by the input's, and the server's own limits (request bytes,
//! ops per transaction, watches per stream, keep-alive streams) are set small, so memory stays
//! bounded; libFuzzer's `-rss_limit_mb` and `-malloc_limit_mb` catch a call that is not.
//!
//! `SERVE_TRACE=1` prints every call and what it answered.

// Each includer uses a part: the fuzz target no encoder, the replay test every check.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::StreamBody;
use lessor::{Lessor, ManualClock};
use lessor_server::pb::etcdserverpb::{
    self as pb, cluster_server::Cluster, compare, kv_server::Kv, lease_server::Lease,
    maintenance_server::Maintenance, range_request, request_op, response_op, watch_create_request,
    watch_request, watch_server::Watch,
};
use lessor_server::{Config, Limits};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::codec::{Codec, Streaming};
use tonic::{Code, Request, Status};

/// Calls decoded from one input, at most.
pub const MAX_CALLS: usize = 64;
/// Stream slots of each kind: one more than the keep-alive stream limit.
pub const SLOTS: u8 = 3;
/// The lessor's largest key, in bytes.
const MAX_KEY: usize = 256;
/// How long any call or stream may take to answer.
const ANSWER: Duration = Duration::from_secs(10);

/// The server's limits under test: small, so that inputs reach them.
pub fn limits() -> Limits {
    Limits::default()
        .max_request_bytes(4096)
        .max_txn_ops(8)
        .max_watches_per_stream(4)
        .max_keepalive_streams(2)
}

/// A stream of one of the two kinds, in one of [`SLOTS`] slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A LeaseKeepAlive stream.
    KeepAlive(u8),
    /// A Watch stream.
    Watch(u8),
}

/// One step of an input.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// KV Range.
    Range(pb::RangeRequest),
    /// KV Put.
    Put(pb::PutRequest),
    /// KV DeleteRange.
    Delete(pb::DeleteRangeRequest),
    /// KV Txn.
    Txn(pb::TxnRequest),
    /// KV Compact.
    Compact(pb::CompactionRequest),
    /// Lease Grant.
    Grant(pb::LeaseGrantRequest),
    /// Lease Revoke.
    Revoke(pb::LeaseRevokeRequest),
    /// Lease TimeToLive.
    TimeToLive(pb::LeaseTimeToLiveRequest),
    /// Lease Leases.
    Leases,
    /// Maintenance Status.
    Status,
    /// Maintenance Alarm.
    Alarm(pb::AlarmRequest),
    /// Cluster MemberList.
    MemberList,
    /// A request on keep-alive stream `slot` (opened first if it is not).
    KeepAlive(u8, pb::LeaseKeepAliveRequest),
    /// A request on watch stream `slot` (opened first if it is not).
    Watch(u8, pb::WatchRequest),
    /// Ends a stream's requests and reads the rest of its responses.
    Close(Slot),
    /// These bytes as one gRPC frame on a stream, whatever they decode to.
    Frame(Slot, Vec<u8>),
    /// These bytes as they are (not framed) into a stream's body, which then ends.
    RawBody(Slot, Vec<u8>),
    /// These bytes decoded by prost as unary request `kind` (mod [`RAW_KINDS`]: range, put,
    /// delete-range, txn, compaction, grant, revoke, time-to-live, leases, status, alarm,
    /// member list), and sent if they decode.
    Raw(u8, Vec<u8>),
    /// A transaction nested this deep (a chain of transactions with a put at the bottom).
    DeepTxn(u8),
    /// Advances the clock by this many seconds, and revokes the leases that expired.
    Advance(u8),
}

/// How many unary request types [`Call::Raw`] decodes into.
pub const RAW_KINDS: u8 = 12;

/// Numbers worth trying, by index (a number's first byte below 16).
const NUMBERS: [i64; 16] = [
    0,
    1,
    2,
    3,
    5,
    10,
    -1,
    -2,
    i64::MIN,
    i64::MAX,
    i64::MIN + 1,
    i64::MAX - 1,
    1 << 31,
    1 << 32,
    -(1 << 32),
    u32::MAX as i64,
];

/// Keys worth trying, by index (a key's first byte with its low two bits 0).
const KEYS: [&[u8]; 10] = [
    b"",
    b"\0",
    b"\xff",
    b"\xff\xff",
    b"a",
    b"b",
    b"a/",
    b"a/b",
    b"\0\0",
    b"\xff\0",
];

/// The bytes of a short key drawn from an alphabet (a key's first byte with low bits 1).
const ALPHABET: [u8; 6] = [b'a', b'b', b'/', 0, 0xff, b'c'];

/// The most operations or comparisons a decoded transaction's list has: one above the limit.
const TXN_LIST: u8 = 10;
/// How deep decoded transactions nest (deeper: [`Call::DeepTxn`]).
const TXN_DEPTH: usize = 3;

/// The input, read a byte at a time; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// A number: an entry of [`NUMBERS`], a small one, or eight bytes little-endian.
    fn number(&mut self) -> i64 {
        match self.byte() {
            b @ 0..16 => NUMBERS[usize::from(b)],
            b @ 16..0xf0 => i64::from(b - 16),
            _ => {
                let mut le = [0u8; 8];
                for b in &mut le {
                    *b = self.byte();
                }
                i64::from_le_bytes(le)
            }
        }
    }

    /// An enum value: valid ones, unknown ones, negative ones, `i32::MIN` and `i32::MAX`.
    fn enumeration(&mut self) -> i32 {
        match self.byte().cast_signed() {
            i8::MIN => i32::MIN,
            i8::MAX => i32::MAX,
            v => i32::from(v),
        }
    }

    /// A key or value: one of [`KEYS`], a short one over [`ALPHABET`], up to 63 bytes as
    /// they are, or 64 to 4096 bytes of `k` (above the size limits).
    fn key(&mut self) -> Vec<u8> {
        let b = self.byte();
        let n = usize::from(b >> 2);
        match b & 3 {
            0 => KEYS[n % KEYS.len()].to_vec(),
            1 => (0..=n % 4)
                .map(|_| ALPHABET[usize::from(self.byte()) % ALPHABET.len()])
                .collect(),
            2 => self.bytes(n),
            _ => vec![b'k'; (n + 1) * 64],
        }
    }

    /// Up to 255 bytes, their length first.
    fn blob(&mut self) -> Vec<u8> {
        let n = self.byte();
        self.bytes(usize::from(n))
    }

    fn slot(&mut self) -> u8 {
        self.byte() % SLOTS
    }

    fn stream(&mut self) -> Slot {
        let b = self.byte();
        let slot = (b >> 1) % SLOTS;
        if b & 1 == 1 {
            Slot::Watch(slot)
        } else {
            Slot::KeepAlive(slot)
        }
    }

    fn range(&mut self) -> pb::RangeRequest {
        let key = self.key();
        let range_end = self.key();
        let limit = self.number();
        let revision = self.number();
        let sort_order = self.enumeration();
        let sort_target = self.enumeration();
        let flags = self.byte();
        pb::RangeRequest {
            key,
            range_end,
            limit,
            revision,
            sort_order,
            sort_target,
            serializable: flags & 1 != 0,
            keys_only: flags & 2 != 0,
            count_only: flags & 4 != 0,
            min_mod_revision: self.number(),
            max_mod_revision: self.number(),
            min_create_revision: self.number(),
            max_create_revision: self.number(),
        }
    }

    fn put(&mut self) -> pb::PutRequest {
        let key = self.key();
        let value = self.key();
        let lease = self.number();
        let flags = self.byte();
        pb::PutRequest {
            key,
            value,
            lease,
            prev_kv: flags & 1 != 0,
            ignore_value: flags & 2 != 0,
            ignore_lease: flags & 4 != 0,
        }
    }

    fn delete(&mut self) -> pb::DeleteRangeRequest {
        pb::DeleteRangeRequest {
            key: self.key(),
            range_end: self.key(),
            prev_kv: self.flag(),
        }
    }

    fn compare(&mut self) -> pb::Compare {
        let result = self.enumeration();
        let target = self.enumeration();
        let key = self.key();
        let range_end = self.key();
        let target_union = match self.byte() % 6 {
            0 => Some(compare::TargetUnion::Version(self.number())),
            1 => Some(compare::TargetUnion::CreateRevision(self.number())),
            2 => Some(compare::TargetUnion::ModRevision(self.number())),
            3 => Some(compare::TargetUnion::Value(self.key())),
            4 => Some(compare::TargetUnion::Lease(self.number())),
            _ => None,
        };
        pb::Compare {
            result,
            target,
            key,
            range_end,
            target_union,
        }
    }

    fn op(&mut self, depth: usize) -> pb::RequestOp {
        let request = match self.byte() % 5 {
            0 => Some(request_op::Request::RequestRange(self.range())),
            1 => Some(request_op::Request::RequestPut(self.put())),
            2 => Some(request_op::Request::RequestDeleteRange(self.delete())),
            3 if depth < TXN_DEPTH => Some(request_op::Request::RequestTxn(self.txn(depth + 1))),
            _ => None,
        };
        pb::RequestOp { request }
    }

    fn txn(&mut self, depth: usize) -> pb::TxnRequest {
        let compare = (0..self.byte() % TXN_LIST)
            .map(|_| self.compare())
            .collect();
        let success = (0..self.byte() % TXN_LIST)
            .map(|_| self.op(depth))
            .collect();
        let failure = (0..self.byte() % TXN_LIST)
            .map(|_| self.op(depth))
            .collect();
        pb::TxnRequest {
            compare,
            success,
            failure,
        }
    }

    fn watch_request(&mut self) -> pb::WatchRequest {
        let request_union = match self.byte() % 4 {
            0 => {
                let key = self.key();
                let range_end = self.key();
                let start_revision = self.number();
                let flags = self.byte();
                let filters = (0..self.byte() % 4).map(|_| self.enumeration()).collect();
                Some(watch_request::RequestUnion::CreateRequest(
                    pb::WatchCreateRequest {
                        key,
                        range_end,
                        start_revision,
                        progress_notify: flags & 1 != 0,
                        filters,
                        prev_kv: flags & 2 != 0,
                        watch_id: self.number(),
                        fragment: flags & 4 != 0,
                    },
                ))
            }
            1 => Some(watch_request::RequestUnion::CancelRequest(
                pb::WatchCancelRequest {
                    watch_id: self.number(),
                },
            )),
            2 => Some(watch_request::RequestUnion::ProgressRequest(
                pb::WatchProgressRequest {},
            )),
            _ => None,
        };
        pb::WatchRequest { request_union }
    }

    fn call(&mut self) -> Call {
        match self.byte() % 20 {
            0 => Call::Range(self.range()),
            1 => Call::Put(self.put()),
            2 => Call::Delete(self.delete()),
            3 => Call::Txn(self.txn(0)),
            4 => Call::Compact(pb::CompactionRequest {
                revision: self.number(),
                physical: self.flag(),
            }),
            5 => Call::Grant(pb::LeaseGrantRequest {
                ttl: self.number(),
                id: self.number(),
            }),
            6 => Call::Revoke(pb::LeaseRevokeRequest { id: self.number() }),
            7 => Call::TimeToLive(pb::LeaseTimeToLiveRequest {
                id: self.number(),
                keys: self.flag(),
            }),
            8 => Call::Leases,
            9 => Call::Status,
            10 => Call::Alarm(pb::AlarmRequest {
                action: self.enumeration(),
                member_id: self.number().cast_unsigned(),
                alarm: self.enumeration(),
            }),
            11 => Call::MemberList,
            12 => {
                let slot = self.slot();
                Call::KeepAlive(slot, pb::LeaseKeepAliveRequest { id: self.number() })
            }
            13 => {
                let slot = self.slot();
                Call::Watch(slot, self.watch_request())
            }
            14 => Call::Close(self.stream()),
            15 => {
                let stream = self.stream();
                Call::Frame(stream, self.blob())
            }
            16 => {
                let stream = self.stream();
                Call::RawBody(stream, self.blob())
            }
            17 => {
                let kind = self.byte() % RAW_KINDS;
                Call::Raw(kind, self.blob())
            }
            18 => Call::DeepTxn(self.byte()),
            _ => Call::Advance(self.byte()),
        }
    }
}

/// The calls of an input: at most [`MAX_CALLS`], decoded until the input runs out.
pub fn decode(data: &[u8]) -> Vec<Call> {
    let mut input = Input(data);
    let mut calls = Vec::new();
    while !input.is_empty() && calls.len() < MAX_CALLS {
        calls.push(input.call());
    }
    calls
}

/// Writes inputs that [`decode`] reads back: the inverse of [`Input`], for seeds.
#[derive(Default)]
struct Output(Vec<u8>);

impl Output {
    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }

    fn flags(&mut self, bits: &[bool]) {
        let mut b = 0u8;
        for (i, &on) in bits.iter().enumerate() {
            b |= u8::from(on) << i;
        }
        self.byte(b);
    }

    fn number(&mut self, n: i64) {
        if let Some(i) = NUMBERS.iter().position(|&v| v == n) {
            self.byte(u8::try_from(i).unwrap_or(0));
        } else if let Ok(small) = u8::try_from(n)
            && small < 0xf0 - 16
        {
            self.byte(small + 16);
        } else {
            self.byte(0xf0);
            self.0.extend_from_slice(&n.to_le_bytes());
        }
    }

    fn enumeration(&mut self, v: i32) -> Result<(), String> {
        let b = match v {
            i32::MIN => i8::MIN,
            i32::MAX => i8::MAX,
            v => i8::try_from(v)
                .ok()
                .filter(|&v| v != i8::MIN && v != i8::MAX)
                .ok_or_else(|| format!("enum value {v} has no encoding"))?,
        };
        self.byte(b.cast_unsigned());
        Ok(())
    }

    fn key(&mut self, key: &[u8]) -> Result<(), String> {
        if let Some(i) = KEYS.iter().position(|&k| k == key) {
            self.byte(u8::try_from(i << 2).unwrap_or(0));
        } else if key.len() < 64 {
            self.byte(u8::try_from(key.len() << 2).unwrap_or(0) | 2);
            self.0.extend_from_slice(key);
        } else if key.len() <= 4096
            && key.len().is_multiple_of(64)
            && key.iter().all(|&b| b == b'k')
        {
            self.byte(u8::try_from((key.len() / 64 - 1) << 2).unwrap_or(0) | 3);
        } else {
            return Err(format!("a key of {} bytes has no encoding", key.len()));
        }
        Ok(())
    }

    fn blob(&mut self, bytes: &[u8]) -> Result<(), String> {
        let n = u8::try_from(bytes.len()).map_err(|_| "a blob above 255 bytes".to_owned())?;
        self.byte(n);
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn count(&mut self, n: usize) -> Result<(), String> {
        match u8::try_from(n) {
            Ok(n) if n < TXN_LIST => {
                self.byte(n);
                Ok(())
            }
            _ => Err(format!("a list of {n} has no encoding")),
        }
    }

    fn slot(&mut self, slot: u8) -> Result<(), String> {
        if slot >= SLOTS {
            return Err(format!("slot {slot} has no encoding"));
        }
        self.byte(slot);
        Ok(())
    }

    fn stream(&mut self, stream: Slot) -> Result<(), String> {
        let (slot, watch) = match stream {
            Slot::KeepAlive(s) => (s, 0),
            Slot::Watch(s) => (s, 1),
        };
        if slot >= SLOTS {
            return Err(format!("slot {slot} has no encoding"));
        }
        self.byte(slot << 1 | watch);
        Ok(())
    }

    fn range(&mut self, r: &pb::RangeRequest) -> Result<(), String> {
        self.key(&r.key)?;
        self.key(&r.range_end)?;
        self.number(r.limit);
        self.number(r.revision);
        self.enumeration(r.sort_order)?;
        self.enumeration(r.sort_target)?;
        self.flags(&[r.serializable, r.keys_only, r.count_only]);
        self.number(r.min_mod_revision);
        self.number(r.max_mod_revision);
        self.number(r.min_create_revision);
        self.number(r.max_create_revision);
        Ok(())
    }

    fn put(&mut self, p: &pb::PutRequest) -> Result<(), String> {
        self.key(&p.key)?;
        self.key(&p.value)?;
        self.number(p.lease);
        self.flags(&[p.prev_kv, p.ignore_value, p.ignore_lease]);
        Ok(())
    }

    fn delete(&mut self, d: &pb::DeleteRangeRequest) -> Result<(), String> {
        self.key(&d.key)?;
        self.key(&d.range_end)?;
        self.flags(&[d.prev_kv]);
        Ok(())
    }

    fn compare(&mut self, c: &pb::Compare) -> Result<(), String> {
        self.enumeration(c.result)?;
        self.enumeration(c.target)?;
        self.key(&c.key)?;
        self.key(&c.range_end)?;
        match &c.target_union {
            Some(compare::TargetUnion::Version(n)) => {
                self.byte(0);
                self.number(*n);
            }
            Some(compare::TargetUnion::CreateRevision(n)) => {
                self.byte(1);
                self.number(*n);
            }
            Some(compare::TargetUnion::ModRevision(n)) => {
                self.byte(2);
                self.number(*n);
            }
            Some(compare::TargetUnion::Value(v)) => {
                self.byte(3);
                self.key(v)?;
            }
            Some(compare::TargetUnion::Lease(n)) => {
                self.byte(4);
                self.number(*n);
            }
            None => self.byte(5),
        }
        Ok(())
    }

    fn op(&mut self, op: &pb::RequestOp, depth: usize) -> Result<(), String> {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => {
                self.byte(0);
                self.range(r)
            }
            Some(request_op::Request::RequestPut(p)) => {
                self.byte(1);
                self.put(p)
            }
            Some(request_op::Request::RequestDeleteRange(d)) => {
                self.byte(2);
                self.delete(d)
            }
            Some(request_op::Request::RequestTxn(t)) if depth < TXN_DEPTH => {
                self.byte(3);
                self.txn(t, depth + 1)
            }
            Some(request_op::Request::RequestTxn(_)) => {
                Err("a transaction nested too deep for the encoding".to_owned())
            }
            None => {
                self.byte(4);
                Ok(())
            }
        }
    }

    fn txn(&mut self, t: &pb::TxnRequest, depth: usize) -> Result<(), String> {
        self.count(t.compare.len())?;
        for c in &t.compare {
            self.compare(c)?;
        }
        self.count(t.success.len())?;
        for op in &t.success {
            self.op(op, depth)?;
        }
        self.count(t.failure.len())?;
        for op in &t.failure {
            self.op(op, depth)?;
        }
        Ok(())
    }

    fn watch_request(&mut self, w: &pb::WatchRequest) -> Result<(), String> {
        match &w.request_union {
            Some(watch_request::RequestUnion::CreateRequest(c)) => {
                self.byte(0);
                self.key(&c.key)?;
                self.key(&c.range_end)?;
                self.number(c.start_revision);
                self.flags(&[c.progress_notify, c.prev_kv, c.fragment]);
                match u8::try_from(c.filters.len()) {
                    Ok(n) if n < 4 => self.byte(n),
                    _ => return Err("more than 3 filters".to_owned()),
                }
                for &f in &c.filters {
                    self.enumeration(f)?;
                }
                self.number(c.watch_id);
            }
            Some(watch_request::RequestUnion::CancelRequest(c)) => {
                self.byte(1);
                self.number(c.watch_id);
            }
            Some(watch_request::RequestUnion::ProgressRequest(_)) => self.byte(2),
            None => self.byte(3),
        }
        Ok(())
    }

    fn call(&mut self, call: &Call) -> Result<(), String> {
        match call {
            Call::Range(r) => {
                self.byte(0);
                self.range(r)?;
            }
            Call::Put(p) => {
                self.byte(1);
                self.put(p)?;
            }
            Call::Delete(d) => {
                self.byte(2);
                self.delete(d)?;
            }
            Call::Txn(t) => {
                self.byte(3);
                self.txn(t, 0)?;
            }
            Call::Compact(c) => {
                self.byte(4);
                self.number(c.revision);
                self.flags(&[c.physical]);
            }
            Call::Grant(g) => {
                self.byte(5);
                self.number(g.ttl);
                self.number(g.id);
            }
            Call::Revoke(r) => {
                self.byte(6);
                self.number(r.id);
            }
            Call::TimeToLive(t) => {
                self.byte(7);
                self.number(t.id);
                self.flags(&[t.keys]);
            }
            Call::Leases => self.byte(8),
            Call::Status => self.byte(9),
            Call::Alarm(a) => {
                self.byte(10);
                self.enumeration(a.action)?;
                self.number(a.member_id.cast_signed());
                self.enumeration(a.alarm)?;
            }
            Call::MemberList => self.byte(11),
            Call::KeepAlive(slot, r) => {
                self.byte(12);
                self.slot(*slot)?;
                self.number(r.id);
            }
            Call::Watch(slot, w) => {
                self.byte(13);
                self.slot(*slot)?;
                self.watch_request(w)?;
            }
            Call::Close(stream) => {
                self.byte(14);
                self.stream(*stream)?;
            }
            Call::Frame(stream, bytes) => {
                self.byte(15);
                self.stream(*stream)?;
                self.blob(bytes)?;
            }
            Call::RawBody(stream, bytes) => {
                self.byte(16);
                self.stream(*stream)?;
                self.blob(bytes)?;
            }
            Call::Raw(kind, bytes) => {
                if *kind >= RAW_KINDS {
                    return Err(format!("raw kind {kind} has no encoding"));
                }
                self.byte(17);
                self.byte(*kind);
                self.blob(bytes)?;
            }
            Call::DeepTxn(depth) => {
                self.byte(18);
                self.byte(*depth);
            }
            Call::Advance(secs) => {
                self.byte(19);
                self.byte(*secs);
            }
        }
        Ok(())
    }
}

/// The input [`decode`] reads as `calls`.
///
/// # Errors
/// A value the format cannot express (a key above 63 bytes but of the `k` run, a slot or a
/// list out of range, an enum value outside `-127..=126` but `i32::MIN`/`i32::MAX`, more than
/// [`MAX_CALLS`] calls).
pub fn encode(calls: &[Call]) -> Result<Vec<u8>, String> {
    if calls.len() > MAX_CALLS {
        return Err(format!("more than {MAX_CALLS} calls"));
    }
    let mut out = Output::default();
    for call in calls {
        out.call(call)?;
    }
    Ok(out.0)
}

/// A chain of `depth` transactions, each the only op of the one above, with a put at the
/// bottom.
pub fn deep_txn(depth: u8) -> pb::TxnRequest {
    let mut txn = pb::TxnRequest {
        success: vec![pb::RequestOp {
            request: Some(request_op::Request::RequestPut(pb::PutRequest {
                key: b"deep".to_vec(),
                value: b"x".to_vec(),
                ..pb::PutRequest::default()
            })),
        }],
        ..pb::TxnRequest::default()
    };
    for _ in 1..depth {
        txn = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(request_op::Request::RequestTxn(txn)),
            }],
            ..pb::TxnRequest::default()
        };
    }
    txn
}

/// The one runtime of the process: current-thread, so that a run is the same every time.
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Panics seen anywhere in the process (the services' tasks included) since it started.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics, then runs the hook that was there (libFuzzer's aborts).
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// Decodes `data` and runs [`check`] on it.
///
/// # Errors
/// The first broken property, described.
pub fn check_bytes(data: &[u8]) -> Result<(), String> {
    check(&decode(data))
}

/// Runs `calls` against fresh services over a fresh lessor; `Err` describes the first broken
/// property (see the module's docs).
///
/// # Errors
/// The first broken property, described.
pub fn check(calls: &[Call]) -> Result<(), String> {
    count_panics();
    let panics = PANICS.load(Ordering::SeqCst);
    let clock = ManualClock::new();
    let lessor = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .max_key_size(MAX_KEY)
        .max_value_size(1024)
        // A short history: a watch from an old revision is refused as compacted.
        .watch_history(16, 4096)
        .open_in_memory()
        .map_err(|e| format!("cannot open a lessor: {e}"))?;
    let limits = limits();
    let config = Config::default().limits(limits);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 2379));
    let mut run = Run {
        kv: lessor_server::__test::kv(lessor.clone(), limits),
        lease: lessor_server::__test::lease(lessor.clone(), limits),
        watch: lessor_server::__test::watch(lessor.clone(), &config),
        maintenance: lessor_server::__test::maintenance(lessor.clone(), "fuzz", addr),
        lessor: lessor.clone(),
        clock,
        max_message: lessor_server::__test::max_message_bytes(&limits),
        revision: 0,
        keepalives: HashMap::new(),
        watches: HashMap::new(),
    };
    let result = runtime()?.block_on(async {
        for (i, call) in calls.iter().enumerate() {
            if trace() {
                let line = format!("call {i}: {call:?}");
                let short: String = line.chars().take(300).collect();
                eprintln!("{short}");
            }
            run.call(call)
                .await
                .map_err(|e| format!("call {i} ({call:?}): {e}"))?;
        }
        run.finish().await
    });
    drop(run);
    result?;
    let problems = lessor
        .verify_report()
        .map_err(|e| format!("verify_report failed: {e}"))?;
    if !problems.is_empty() {
        return Err(format!("the lessor is inconsistent: {problems:?}"));
    }
    lessor.close().map_err(|e| format!("close failed: {e}"))?;
    let panicked = PANICS.load(Ordering::SeqCst) - panics;
    if panicked > 0 {
        return Err(format!("{panicked} panic(s) during the run"));
    }
    Ok(())
}

/// The sending end of a stream's request body.
type BodyTx = mpsc::UnboundedSender<Bytes>;

/// A stream's responses.
type Responses<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A request stream as tonic hands it to a service, fed through the returned sender.
fn request_stream<T: Message + Default + Send + 'static>(max: usize) -> (BodyTx, Streaming<T>) {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let body = StreamBody::new(
        UnboundedReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b))),
    );
    let decoder = tonic_prost::ProstCodec::<T, T>::default().decoder();
    (tx, Streaming::new_request(decoder, body, None, Some(max)))
}

/// A gRPC message frame (uncompressed) around `message`.
fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// `msg` as the server receives it: encoded, then decoded as tonic does; `None` if the
/// transport refuses it (above the message size, or nested past prost's recursion limit).
fn wire<T: Message + Default>(msg: &T, max: usize) -> Option<T> {
    let bytes = msg.encode_to_vec();
    if bytes.len() > max {
        return None;
    }
    T::decode(bytes.as_slice()).ok()
}

/// An open keep-alive stream.
struct KeepAliveStream {
    body: BodyTx,
    responses: Responses<pb::LeaseKeepAliveResponse>,
    /// A frame that does not decode was sent: the stream ends with an error.
    broken: bool,
}

/// An open watch stream, its responses collected by a task until it ends.
struct WatchStream {
    body: BodyTx,
    /// What was sent, in order; `None` for a frame that does not decode.
    sent: Vec<Option<pb::WatchRequest>>,
    /// The stream's framing or a message was broken: it may end with an error, and requests
    /// after that are not answered.
    broken: bool,
    /// A frame that does not decode was sent: the stream must end with an error.
    bad_frame: bool,
    responses: tokio::task::JoinHandle<Vec<Result<pb::WatchResponse, Status>>>,
}

/// One run: the services, the lessor under them, and the open streams.
struct Run<K, L, W, M> {
    kv: K,
    lease: L,
    watch: W,
    maintenance: M,
    lessor: Lessor,
    clock: ManualClock,
    max_message: usize,
    /// The highest revision a unary response's header gave.
    revision: i64,
    keepalives: HashMap<u8, KeepAliveStream>,
    watches: HashMap<u8, WatchStream>,
}

/// `what` within [`ANSWER`].
async fn answer<T>(what: &str, f: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(ANSWER, f)
        .await
        .map_err(|_| format!("{what}: no answer in {} s", ANSWER.as_secs()))
}

/// Whether to print every call and its answer (`SERVE_TRACE=1`), to read what an input does.
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("SERVE_TRACE").is_some_and(|v| v == "1"))
}

/// A unary call's result: `Ok`, or an error with one of the codes `allowed` for it.
fn allowed<T>(
    result: Result<tonic::Response<T>, Status>,
    codes: &[Code],
) -> Result<Option<T>, String> {
    if trace() {
        match &result {
            Ok(_) => eprintln!("  -> ok"),
            Err(s) => eprintln!("  -> {:?}: {}", s.code(), s.message()),
        }
    }
    match result {
        Ok(r) => Ok(Some(r.into_inner())),
        Err(s) if codes.contains(&s.code()) => Ok(None),
        Err(s) => Err(format!("answered {:?}: {}", s.code(), s.message())),
    }
}

impl<K, L, W, M> Run<K, L, W, M>
where
    K: Kv,
    L: Lease,
    W: Watch,
    M: Maintenance + Cluster,
{
    /// A response header: present, and its revision not below any given before.
    fn header(&mut self, header: Option<&pb::ResponseHeader>) -> Result<(), String> {
        let h = header.ok_or("a response without a header")?;
        if h.revision < self.revision {
            return Err(format!(
                "revision went back from {} to {}",
                self.revision, h.revision
            ));
        }
        self.revision = h.revision;
        Ok(())
    }

    async fn call(&mut self, call: &Call) -> Result<(), String> {
        let max = self.max_message;
        match call {
            Call::Range(r) => self.range(r).await,
            Call::Put(r) => self.put(r).await,
            Call::Delete(r) => self.delete(r).await,
            Call::Txn(r) => self.txn(r).await,
            Call::DeepTxn(depth) => self.txn(&deep_txn(*depth)).await,
            Call::Compact(r) => self.compact(r).await,
            Call::Grant(r) => self.grant(r).await,
            Call::Revoke(r) => self.revoke(r).await,
            Call::TimeToLive(r) => self.time_to_live(r).await,
            Call::Leases => self.leases().await,
            Call::Status => self.status().await,
            Call::Alarm(r) => self.alarm(r).await,
            Call::MemberList => self.member_list().await,
            Call::KeepAlive(slot, r) => {
                let bytes = r.encode_to_vec();
                self.keep_alive(*slot, frame(&bytes), Some(*r)).await
            }
            Call::Watch(slot, r) => match wire(r, max) {
                Some(r) => {
                    self.watch_send(*slot, frame(&r.encode_to_vec()), Some(r))
                        .await
                }
                None => Ok(()),
            },
            Call::Frame(Slot::KeepAlive(slot), bytes) => {
                let decoded = pb::LeaseKeepAliveRequest::decode(bytes.as_slice()).ok();
                self.keep_alive(*slot, frame(bytes), decoded).await
            }
            Call::Frame(Slot::Watch(slot), bytes) => {
                let decoded = pb::WatchRequest::decode(bytes.as_slice()).ok();
                self.watch_send(*slot, frame(bytes), decoded).await
            }
            Call::RawBody(stream, bytes) => self.raw_body(*stream, bytes).await,
            Call::Close(Slot::KeepAlive(slot)) => self.close_keep_alive(*slot).await,
            Call::Close(Slot::Watch(slot)) => self.close_watch(*slot).await,
            Call::Raw(kind, bytes) => self.raw(*kind, bytes).await,
            Call::Advance(secs) => {
                self.clock.advance(Duration::from_secs(u64::from(*secs)));
                self.lessor
                    .revoke_expired()
                    .map(|_| ())
                    .map_err(|e| format!("revoke_expired failed: {e}"))
            }
        }
    }

    /// Bytes a hostile client sends as a unary request: sent if they decode.
    async fn raw(&mut self, kind: u8, bytes: &[u8]) -> Result<(), String> {
        fn d<T: Message + Default>(bytes: &[u8]) -> Option<T> {
            T::decode(bytes).ok()
        }
        let call = match kind % RAW_KINDS {
            0 => d(bytes).map(Call::Range),
            1 => d(bytes).map(Call::Put),
            2 => d(bytes).map(Call::Delete),
            3 => d(bytes).map(Call::Txn),
            4 => d(bytes).map(Call::Compact),
            5 => d(bytes).map(Call::Grant),
            6 => d(bytes).map(Call::Revoke),
            7 => d(bytes).map(Call::TimeToLive),
            8 => d::<pb::LeaseLeasesRequest>(bytes).map(|_| Call::Leases),
            9 => d::<pb::StatusRequest>(bytes).map(|_| Call::Status),
            10 => d(bytes).map(Call::Alarm),
            _ => d::<pb::MemberListRequest>(bytes).map(|_| Call::MemberList),
        };
        match call {
            Some(call) => Box::pin(self.call(&call)).await,
            None => Ok(()),
        }
    }

    async fn range(&mut self, r: &pb::RangeRequest) -> Result<(), String> {
        let Some(r) = wire(r, self.max_message) else {
            return Ok(());
        };
        let result = answer("range", self.kv.range(Request::new(r.clone()))).await?;
        if let Some(resp) = allowed(result, &[Code::InvalidArgument, Code::OutOfRange])? {
            self.header(resp.header.as_ref())?;
            if !usize::try_from(resp.count).is_ok_and(|n| n >= resp.kvs.len()) {
                return Err(format!(
                    "count {} below {} keys",
                    resp.count,
                    resp.kvs.len()
                ));
            }
            if usize::try_from(r.limit).is_ok_and(|l| l > 0 && resp.kvs.len() > l) {
                return Err(format!(
                    "{} keys above the limit {}",
                    resp.kvs.len(),
                    r.limit
                ));
            }
            if r.count_only && !resp.kvs.is_empty() {
                return Err("keys in a count-only answer".to_owned());
            }
            if r.keys_only && resp.kvs.iter().any(|kv| !kv.value.is_empty()) {
                return Err("values in a keys-only answer".to_owned());
            }
            if let Some(whole) = self.whole_range(&r).await? {
                check_range(&r, &resp, &whole)?;
            }
        }
        Ok(())
    }

    /// Every key of `r`'s range, in key order, read another way: a transaction's range op,
    /// which reads the whole range (a range request without a limit, sorted by key, takes the
    /// engine's paged read instead). `None` where a transaction cannot read it.
    async fn whole_range(
        &mut self,
        r: &pb::RangeRequest,
    ) -> Result<Option<Vec<lessor_server::pb::mvccpb::KeyValue>>, String> {
        let txn = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(request_op::Request::RequestRange(pb::RangeRequest {
                    key: r.key.clone(),
                    range_end: r.range_end.clone(),
                    ..pb::RangeRequest::default()
                })),
            }],
            ..pb::TxnRequest::default()
        };
        // A transaction refuses a range whose first key is above the lessor's key size (a
        // plain range reads it: such a key cannot exist), and any request above the size limit.
        if r.key.len() > MAX_KEY || txn.encoded_len() > limits().max_request_bytes {
            return Ok(None);
        }
        let resp = answer("whole range", self.kv.txn(Request::new(txn)))
            .await?
            .map_err(|s| format!("the whole range answered {:?}: {}", s.code(), s.message()))?
            .into_inner();
        match resp.responses.first().and_then(|op| op.response.as_ref()) {
            Some(response_op::Response::ResponseRange(range)) if resp.responses.len() == 1 => {
                Ok(Some(range.kvs.clone()))
            }
            _ => Err(format!("the whole range answered {resp:?}")),
        }
    }

    async fn put(&mut self, r: &pb::PutRequest) -> Result<(), String> {
        let Some(r) = wire(r, self.max_message) else {
            return Ok(());
        };
        let result = answer("put", self.kv.put(Request::new(r))).await?;
        if let Some(resp) = allowed(result, &[Code::InvalidArgument, Code::NotFound])? {
            self.header(resp.header.as_ref())?;
        }
        Ok(())
    }

    async fn delete(&mut self, r: &pb::DeleteRangeRequest) -> Result<(), String> {
        let Some(r) = wire(r, self.max_message) else {
            return Ok(());
        };
        let result = answer("delete", self.kv.delete_range(Request::new(r.clone()))).await?;
        if let Some(resp) = allowed(result, &[Code::InvalidArgument])? {
            self.header(resp.header.as_ref())?;
            if !r.prev_kv && !resp.prev_kvs.is_empty() {
                return Err("previous keys without prev_kv".to_owned());
            }
            if r.prev_kv && usize::try_from(resp.deleted) != Ok(resp.prev_kvs.len()) {
                return Err(format!(
                    "deleted {} but {} previous keys",
                    resp.deleted,
                    resp.prev_kvs.len()
                ));
            }
        }
        Ok(())
    }

    async fn txn(&mut self, r: &pb::TxnRequest) -> Result<(), String> {
        let Some(r) = wire(r, self.max_message) else {
            return Ok(());
        };
        let result = answer("txn", self.kv.txn(Request::new(r.clone()))).await?;
        let codes = [Code::InvalidArgument, Code::NotFound, Code::Unimplemented];
        if let Some(resp) = allowed(result, &codes)? {
            self.header(resp.header.as_ref())?;
            let ops = if resp.succeeded {
                &r.success
            } else {
                &r.failure
            };
            if ops.len() != resp.responses.len() {
                return Err(format!(
                    "{} responses to {} ops",
                    resp.responses.len(),
                    ops.len()
                ));
            }
        }
        Ok(())
    }

    async fn compact(&mut self, r: &pb::CompactionRequest) -> Result<(), String> {
        let result = answer("compact", self.kv.compact(Request::new(*r))).await?;
        if let Some(resp) = allowed(result, &[Code::OutOfRange])? {
            self.header(resp.header.as_ref())?;
        }
        Ok(())
    }

    async fn grant(&mut self, r: &pb::LeaseGrantRequest) -> Result<(), String> {
        let result = answer("grant", self.lease.lease_grant(Request::new(*r))).await?;
        let codes = [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::OutOfRange,
            Code::ResourceExhausted,
        ];
        if let Some(resp) = allowed(result, &codes)? {
            self.header(resp.header.as_ref())?;
            if resp.id <= 0 || (r.id != 0 && resp.id != r.id) || resp.ttl < 0 {
                return Err(format!("granted id {} TTL {}", resp.id, resp.ttl));
            }
        }
        Ok(())
    }

    async fn revoke(&mut self, r: &pb::LeaseRevokeRequest) -> Result<(), String> {
        let result = answer("revoke", self.lease.lease_revoke(Request::new(*r))).await?;
        if let Some(resp) = allowed(result, &[Code::NotFound])? {
            self.header(resp.header.as_ref())?;
        }
        Ok(())
    }

    async fn time_to_live(&mut self, r: &pb::LeaseTimeToLiveRequest) -> Result<(), String> {
        let result = answer(
            "time-to-live",
            self.lease.lease_time_to_live(Request::new(*r)),
        )
        .await?;
        if let Some(resp) = allowed(result, &[])? {
            self.header(resp.header.as_ref())?;
            if resp.id != r.id || resp.ttl < -1 || (!r.keys && !resp.keys.is_empty()) {
                return Err(format!("time-to-live answered {resp:?}"));
            }
        }
        Ok(())
    }

    async fn leases(&mut self) -> Result<(), String> {
        let result = answer(
            "leases",
            self.lease
                .lease_leases(Request::new(pb::LeaseLeasesRequest {})),
        )
        .await?;
        if let Some(resp) = allowed(result, &[])? {
            self.header(resp.header.as_ref())?;
            if resp.leases.iter().any(|l| l.id <= 0) {
                return Err(format!("a lease id out of range: {:?}", resp.leases));
            }
        }
        Ok(())
    }

    async fn status(&mut self) -> Result<(), String> {
        let result = answer(
            "status",
            self.maintenance.status(Request::new(pb::StatusRequest {})),
        )
        .await?;
        if let Some(resp) = allowed(result, &[])? {
            self.header(resp.header.as_ref())?;
        }
        Ok(())
    }

    async fn alarm(&mut self, r: &pb::AlarmRequest) -> Result<(), String> {
        let result = answer("alarm", self.maintenance.alarm(Request::new(*r))).await?;
        if let Some(resp) = allowed(result, &[Code::Unimplemented])? {
            self.header(resp.header.as_ref())?;
        }
        Ok(())
    }

    async fn member_list(&mut self) -> Result<(), String> {
        let result = answer(
            "member list",
            self.maintenance
                .member_list(Request::new(pb::MemberListRequest::default())),
        )
        .await?;
        if let Some(resp) = allowed(result, &[])? {
            self.header(resp.header.as_ref())?;
            if resp.members.len() != 1 {
                return Err(format!("{} members", resp.members.len()));
            }
        }
        Ok(())
    }

    /// Opens a keep-alive stream; `None` if the limit refused it.
    async fn open_keep_alive(&mut self) -> Result<Option<KeepAliveStream>, String> {
        let (body, inbound) = request_stream::<pb::LeaseKeepAliveRequest>(self.max_message);
        let result = answer(
            "keep-alive open",
            self.lease.lease_keep_alive(Request::new(inbound)),
        )
        .await?;
        Ok(
            allowed(result, &[Code::ResourceExhausted])?.map(|responses| KeepAliveStream {
                body,
                responses: Box::pin(responses),
                broken: false,
            }),
        )
    }

    /// Sends one frame on keep-alive stream `slot` (opening it if it is not open, unless the
    /// limit refuses): `request` is what it decodes to. A request gets its answer; a frame
    /// that does not decode ends the stream with an error.
    async fn keep_alive(
        &mut self,
        slot: u8,
        frame: Bytes,
        request: Option<pb::LeaseKeepAliveRequest>,
    ) -> Result<(), String> {
        if !self.keepalives.contains_key(&slot) {
            match self.open_keep_alive().await? {
                Some(stream) => self.keepalives.insert(slot, stream),
                None => return Ok(()),
            };
        }
        let Some(stream) = self.keepalives.get_mut(&slot) else {
            return Ok(());
        };
        if stream.broken {
            return Ok(());
        }
        if stream.body.send(frame).is_err() {
            return Err("a keep-alive stream stopped reading its requests".to_owned());
        }
        let next = answer("keep-alive", stream.responses.next()).await?;
        if trace() {
            eprintln!("  -> {next:?}");
        }
        match (request, next) {
            (Some(req), Some(Ok(resp))) => {
                if resp.id != req.id || resp.ttl < 0 {
                    return Err(format!("keep-alive of {} answered {resp:?}", req.id));
                }
                self.header(resp.header.as_ref())
            }
            (None, Some(Err(_))) => {
                // tonic's answer to a message that does not decode; the stream ends.
                stream.broken = true;
                Ok(())
            }
            (request, next) => Err(format!("keep-alive stream: {request:?} answered {next:?}")),
        }
    }

    /// Ends keep-alive stream `slot`: its responses must end too (after the error of a
    /// broken stream, and with nothing more for a healthy one).
    async fn close_keep_alive(&mut self, slot: u8) -> Result<(), String> {
        let Some(mut stream) = self.keepalives.remove(&slot) else {
            return Ok(());
        };
        drop(stream.body);
        while let Some(item) = answer("keep-alive close", stream.responses.next()).await? {
            if !stream.broken {
                return Err(format!("a response with no request: {item:?}"));
            }
        }
        Ok(())
    }

    /// Opens watch stream `slot` if it is not open.
    async fn open_watch(&mut self, slot: u8) -> Result<(), String> {
        if self.watches.contains_key(&slot) {
            return Ok(());
        }
        let (body, inbound) = request_stream::<pb::WatchRequest>(self.max_message);
        let result = answer("watch open", self.watch.watch(Request::new(inbound))).await?;
        let Some(responses) = allowed(result, &[])? else {
            return Ok(());
        };
        let mut responses: Responses<pb::WatchResponse> = Box::pin(responses);
        let responses = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(r) = responses.next().await {
                all.push(r);
            }
            all
        });
        self.watches.insert(
            slot,
            WatchStream {
                body,
                sent: Vec::new(),
                broken: false,
                bad_frame: false,
                responses,
            },
        );
        Ok(())
    }

    /// Sends one frame on watch stream `slot`; `request` is what it decodes to.
    async fn watch_send(
        &mut self,
        slot: u8,
        frame: Bytes,
        request: Option<pb::WatchRequest>,
    ) -> Result<(), String> {
        self.open_watch(slot).await?;
        let Some(stream) = self.watches.get_mut(&slot) else {
            return Ok(());
        };
        if stream.broken {
            return Ok(());
        }
        if stream.body.send(frame).is_err() {
            return Err("a watch stream stopped reading its requests".to_owned());
        }
        stream.broken = request.is_none();
        stream.bad_frame = request.is_none();
        stream.sent.push(request);
        Ok(())
    }

    /// Ends watch stream `slot` and checks everything it answered.
    async fn close_watch(&mut self, slot: u8) -> Result<(), String> {
        let Some(stream) = self.watches.remove(&slot) else {
            return Ok(());
        };
        drop(stream.body);
        let responses = answer("watch close", stream.responses)
            .await?
            .map_err(|e| format!("the watch stream's reader failed: {e}"))?;
        if trace() {
            for r in &responses {
                match r {
                    Ok(w) => eprintln!(
                        "  watch {} created {} canceled {} compact {} {:?} events {:?}",
                        w.watch_id,
                        w.created,
                        w.canceled,
                        w.compact_revision,
                        w.cancel_reason,
                        w.events
                            .iter()
                            .map(|e| (e.r#type, e.kv.as_ref().map(|kv| (&kv.key, kv.mod_revision))))
                            .collect::<Vec<_>>()
                    ),
                    Err(s) => eprintln!("  watch stream error {s:?}"),
                }
            }
        }
        check_watch(&stream.sent, &responses, stream.broken)?;
        if stream.bad_frame && !matches!(responses.last(), Some(Err(_))) {
            return Err(
                "a watch stream sent a frame that does not decode ended without an error"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// Raw bytes into a stream's body, which then ends: whatever tonic makes of them, the
    /// stream must end, with nothing but responses and at most an error.
    async fn raw_body(&mut self, stream: Slot, bytes: &[u8]) -> Result<(), String> {
        match stream {
            Slot::KeepAlive(slot) => {
                if !self.keepalives.contains_key(&slot) {
                    match self.open_keep_alive().await? {
                        Some(s) => self.keepalives.insert(slot, s),
                        None => return Ok(()),
                    };
                }
                if let Some(s) = self.keepalives.get_mut(&slot) {
                    // A stream that already ended has dropped its body: nothing to send.
                    let _ = s.body.send(Bytes::copy_from_slice(bytes));
                    s.broken = true;
                }
                self.close_keep_alive(slot).await
            }
            Slot::Watch(slot) => {
                self.open_watch(slot).await?;
                if let Some(s) = self.watches.get_mut(&slot) {
                    let _ = s.body.send(Bytes::copy_from_slice(bytes));
                    s.broken = true;
                }
                self.close_watch(slot).await
            }
        }
    }

    /// Closes every stream, then checks that the keep-alive streams' places were freed.
    async fn finish(&mut self) -> Result<(), String> {
        for slot in 0..SLOTS {
            self.close_keep_alive(slot).await?;
            self.close_watch(slot).await?;
        }
        let mut open = Vec::new();
        for _ in 0..limits().max_keepalive_streams {
            match self.open_keep_alive().await? {
                Some(stream) => open.push(stream),
                None => return Err("a closed keep-alive stream still holds its place".to_owned()),
            }
        }
        for mut stream in open {
            drop(stream.body);
            if let Some(item) = answer("keep-alive close", stream.responses.next()).await? {
                return Err(format!("a response with no request: {item:?}"));
            }
        }
        Ok(())
    }
}

/// A range's answer against `whole`, every key of its range in key order: the count is the
/// range's; sorted by key without revision bounds, the keys are the first `limit` of `whole`
/// (backwards if descending), `more` says whether there were others; otherwise each key
/// returned is one of `whole`'s.
fn check_range(
    r: &pb::RangeRequest,
    resp: &pb::RangeResponse,
    whole: &[lessor_server::pb::mvccpb::KeyValue],
) -> Result<(), String> {
    use range_request::{SortOrder, SortTarget};
    if usize::try_from(resp.count) != Ok(whole.len()) {
        return Err(format!(
            "count {} for a range of {} keys",
            resp.count,
            whole.len()
        ));
    }
    let strip = |kv: &lessor_server::pb::mvccpb::KeyValue| {
        let mut kv = kv.clone();
        if r.keys_only {
            kv.value.clear();
        }
        kv
    };
    let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    let bounded = [
        r.min_mod_revision,
        r.max_mod_revision,
        r.min_create_revision,
        r.max_create_revision,
    ]
    .iter()
    .any(|&b| b != 0);
    if target == SortTarget::Key && !bounded {
        let mut expected: Vec<_> = whole.iter().map(strip).collect();
        if SortOrder::try_from(r.sort_order) == Ok(SortOrder::Descend) {
            expected.reverse();
        }
        let mut more = false;
        if let Ok(limit) = usize::try_from(r.limit)
            && limit > 0
            && expected.len() > limit
        {
            expected.truncate(limit);
            more = true;
        }
        if r.count_only {
            expected.clear();
            more = false;
        }
        if resp.kvs != expected || resp.more != more {
            return Err(format!(
                "range answered {:?} (more: {}), the whole range gives {expected:?} (more: {more})",
                resp.kvs, resp.more
            ));
        }
    } else if let Some(kv) = resp
        .kvs
        .iter()
        .find(|kv| !whole.iter().map(strip).any(|w| w == **kv))
    {
        return Err(format!("range answered {kv:?}, not in the range"));
    }
    Ok(())
}

/// What a watch was created for, as its events must show.
struct Live {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    no_put: bool,
    no_delete: bool,
    start_revision: i64,
    last: i64,
}

/// Checks a watch stream's responses against its requests (see the module's docs).
pub fn check_watch(
    sent: &[Option<pb::WatchRequest>],
    responses: &[Result<pb::WatchResponse, Status>],
    broken: bool,
) -> Result<(), String> {
    let mut creates: VecDeque<&pb::WatchCreateRequest> = VecDeque::new();
    let mut progress_asked = 0usize;
    for request in sent.iter().flatten() {
        match &request.request_union {
            Some(watch_request::RequestUnion::CreateRequest(c)) => creates.push_back(c),
            Some(watch_request::RequestUnion::ProgressRequest(_)) => progress_asked += 1,
            _ => {}
        }
    }
    let mut progress = 0usize;
    let mut live: HashMap<i64, Live> = HashMap::new();
    for (i, response) in responses.iter().enumerate() {
        let w = match response {
            Ok(w) => w,
            // How a broken stream ends (tonic's error for what it could not decode).
            Err(_) if broken && i + 1 == responses.len() => break,
            Err(status) => {
                return Err(format!(
                    "watch response {i} is an error on a healthy stream: {status:?}"
                ));
            }
        };
        if w.header.is_none() {
            return Err(format!("watch response {i} has no header"));
        }
        if w.created {
            let c = creates
                .pop_front()
                .ok_or_else(|| format!("watch response {i}: created, for no create request"))?;
            if !w.events.is_empty() {
                return Err(format!("watch response {i}: events in a created response"));
            }
            if w.canceled {
                if w.watch_id != -1 {
                    return Err(format!(
                        "watch response {i}: a refusal for id {}",
                        w.watch_id
                    ));
                }
                continue;
            }
            if c.watch_id != 0 && w.watch_id != c.watch_id {
                return Err(format!(
                    "watch response {i}: asked for id {}, created {}",
                    c.watch_id, w.watch_id
                ));
            }
            let end = match c.range_end.as_slice() {
                [] => {
                    let mut end = c.key.clone();
                    end.push(0);
                    Some(end)
                }
                [0] => None,
                end => Some(end.to_vec()),
            };
            let filter = |f: watch_create_request::FilterType| c.filters.contains(&(f as i32));
            let watch = Live {
                start: c.key.clone(),
                end,
                no_put: filter(watch_create_request::FilterType::Noput),
                no_delete: filter(watch_create_request::FilterType::Nodelete),
                start_revision: c.start_revision,
                last: 0,
            };
            if live.insert(w.watch_id, watch).is_some() {
                return Err(format!(
                    "watch response {i}: id {} created twice",
                    w.watch_id
                ));
            }
        } else if w.canceled {
            if live.remove(&w.watch_id).is_none() {
                return Err(format!(
                    "watch response {i}: cancelled watch {} is not live",
                    w.watch_id
                ));
            }
        } else if !w.events.is_empty() {
            let watch = live.get_mut(&w.watch_id).ok_or_else(|| {
                format!(
                    "watch response {i}: events for watch {} not live",
                    w.watch_id
                )
            })?;
            for e in &w.events {
                let kv =
                    e.kv.as_ref()
                        .ok_or_else(|| format!("watch response {i}: an event without its key"))?;
                let in_range =
                    kv.key >= watch.start && watch.end.as_ref().is_none_or(|end| kv.key < *end);
                let filtered = match e.r#type {
                    0 => watch.no_put,
                    1 => watch.no_delete,
                    _ => true,
                };
                let revision = kv.mod_revision;
                if !in_range
                    || filtered
                    || revision < watch.last
                    || (watch.start_revision > 0 && revision < watch.start_revision)
                {
                    return Err(format!(
                        "watch response {i}: event {e:?} for watch {} (range {:?}..{:?}, \
                         start {}, after revision {})",
                        w.watch_id, watch.start, watch.end, watch.start_revision, watch.last
                    ));
                }
                watch.last = revision;
            }
        } else if w.watch_id == -1 {
            progress += 1;
        } else if !live.contains_key(&w.watch_id) {
            return Err(format!(
                "watch response {i}: an empty response for watch {} not live",
                w.watch_id
            ));
        }
    }
    if !broken {
        if !creates.is_empty() {
            return Err(format!("{} create requests not answered", creates.len()));
        }
        if progress != progress_asked {
            return Err(format!(
                "{progress} progress responses to {progress_asked} requests"
            ));
        }
    }
    Ok(())
}
