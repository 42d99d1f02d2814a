//! The types generated from `proto/` (etcd's v3 API, as we serve it), and the response header.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// etcd's key-value record and watch event (`mvccpb`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's v3 services and their messages (`etcdserverpb`).
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
