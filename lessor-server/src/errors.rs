//! etcd's errors, as its clients recognise them: a gRPC code and a message. Go's `clientv3`
//! maps a status back to its own error values by the message, so the strings below are etcd
//! 3.4's exactly (`api/v3rpc/rpctypes/error.go`). Conditions etcd has no error for (a closed
//! database, a storage failure, our limits) get a message of ours prefixed with `lessor:`.

use tonic::{Code, Status};

/// A request with an empty key.
pub(crate) fn empty_key() -> Status {
    Status::invalid_argument("etcdserver: key is not provided")
}

/// A put with `ignore_value` or `ignore_lease` on a key that does not exist.
pub(crate) fn key_not_found() -> Status {
    Status::invalid_argument("etcdserver: key not found")
}

/// A put with `ignore_value` that also gives a value.
pub(crate) fn value_provided() -> Status {
    Status::invalid_argument("etcdserver: value is provided")
}

/// A put with `ignore_lease` that also gives a lease.
pub(crate) fn lease_provided() -> Status {
    Status::invalid_argument("etcdserver: lease is provided")
}

/// A transaction with more comparisons or ops in a branch than the limit.
pub(crate) fn too_many_ops() -> Status {
    Status::invalid_argument("etcdserver: too many operations in txn request")
}

/// A transaction branch that writes a key twice.
pub(crate) fn duplicate_key() -> Status {
    Status::invalid_argument("etcdserver: duplicate key given in txn request")
}

/// A read (or watch) at a revision older than what is kept.
pub(crate) fn compacted() -> Status {
    Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
}

/// A read (or compaction) at a revision that does not exist yet.
pub(crate) fn future_rev() -> Status {
    Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
}

/// The lease is not alive.
pub(crate) fn lease_not_found() -> Status {
    Status::not_found("etcdserver: requested lease not found")
}

/// A grant with the id of a live lease.
pub(crate) fn lease_exists() -> Status {
    Status::failed_precondition("etcdserver: lease already exists")
}

/// A grant above the maximum TTL.
pub(crate) fn lease_ttl_too_large() -> Status {
    Status::out_of_range("etcdserver: too large lease TTL")
}

/// A request above the size limit.
pub(crate) fn request_too_large() -> Status {
    Status::invalid_argument("etcdserver: request is too large")
}

/// A limit on concurrent requests (here: keep-alive streams) reached.
pub(crate) fn too_many_requests() -> Status {
    Status::resource_exhausted("etcdserver: too many requests")
}

/// The database is closed (the server is stopping).
pub(crate) fn stopped() -> Status {
    Status::unavailable("etcdserver: server stopped")
}

/// Damage found in the database file.
pub(crate) fn corrupt() -> Status {
    Status::data_loss("etcdserver: corrupt cluster")
}

/// Something etcd allows that lessor cannot do without giving a wrong answer.
pub(crate) fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!("lessor: {what} is not supported"))
}

/// A negative or otherwise impossible lease id in a grant.
pub(crate) fn invalid_lease_id(id: i64) -> Status {
    Status::invalid_argument(format!(
        "lessor: invalid lease id {id}: ids are 1..=9223372036854775807 (0 lets the server choose)"
    ))
}

/// etcd's status for one of the engine's errors. `InvalidKey` other than an empty key comes
/// only from a transaction that writes a key twice (callers check empty keys first).
pub(crate) fn from_lessor(e: lessor::Error) -> Status {
    use lessor::Error as E;
    match e {
        E::LeaseNotFound(_) | E::InvalidLeaseId(_) => lease_not_found(),
        E::LeaseExists(_) => lease_exists(),
        E::TtlOutOfRange { .. } => lease_ttl_too_large(),
        E::KeyNotFound(_) => key_not_found(),
        E::InvalidKey("keys must not be empty") => empty_key(),
        E::InvalidKey(_) => duplicate_key(),
        E::KeyTooLarge { .. } | E::ValueTooLarge { .. } => request_too_large(),
        E::Compacted { .. } => compacted(),
        E::Closed => stopped(),
        E::Corrupted(_) => corrupt(),
        // Ids are never reused; grants with explicit ids still work.
        E::LeaseIdsExhausted => Status::resource_exhausted(format!("lessor: {e}")),
        // Transient: the lessor reloads its file and calls succeed again.
        E::Poisoned | E::Storage(_) | E::Unavailable(_) => {
            Status::new(Code::Unavailable, format!("lessor: {e}"))
        }
        other => Status::internal(format!("lessor: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_errors_clients_match_on_get_etcds_codes_and_messages() {
        let id = lessor::LeaseId::new(7).unwrap();
        let s = from_lessor(lessor::Error::LeaseNotFound(id));
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "etcdserver: requested lease not found")
        );
        let s = from_lessor(lessor::Error::LeaseExists(id));
        assert_eq!(s.message(), "etcdserver: lease already exists");
        let s = from_lessor(lessor::Error::InvalidKey("keys must not be empty"));
        assert_eq!(s.message(), "etcdserver: key is not provided");
        let s = from_lessor(lessor::Error::KeyTooLarge { len: 9, max: 8 });
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "etcdserver: request is too large")
        );
        assert_eq!(from_lessor(lessor::Error::Closed).code(), Code::Unavailable);
    }
}
