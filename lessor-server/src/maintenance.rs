//! Maintenance (Status, and Alarm's listing) and Cluster (MemberList): what `etcdctl endpoint
//! status/health` and `member list` ask. lessor is a cluster of one member, always its own
//! leader, with no alarms.

use std::net::SocketAddr;

use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::errors;
use crate::kv::{MEMBER_ID, header};
use crate::proto::etcdserverpb::{self as pb, alarm_request, cluster_server, maintenance_server};

/// The etcd version we answer as: the API we serve is etcd 3.4's.
pub(crate) const ETCD_VERSION: &str = "3.4.0";

/// The Maintenance and Cluster services.
#[derive(Clone, Debug)]
pub(crate) struct Maintenance {
    engine: Engine,
    name: String,
    /// The client URL of this member, as clients reach it.
    url: String,
}

impl Maintenance {
    pub(crate) fn new(engine: Engine, name: String, addr: SocketAddr, tls: bool) -> Maintenance {
        let scheme = if tls { "https" } else { "http" };
        Maintenance {
            engine,
            name,
            url: format!("{scheme}://{addr}"),
        }
    }
}

#[tonic::async_trait]
impl maintenance_server::Maintenance for Maintenance {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let req = request.into_inner();
        if req.action == alarm_request::AlarmAction::Activate as i32 {
            return Err(errors::unsupported("raising an alarm"));
        }
        // No alarm is ever raised, so listing and disarming have nothing to report.
        Ok(Response::new(pb::AlarmResponse {
            header: header(self.engine.revision()?),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let stats = self.engine.stats()?;
        let revision = lessor::Revision::new(stats.revision);
        let size = stats
            .file_size
            .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
        Ok(Response::new(pb::StatusResponse {
            header: header(revision),
            version: ETCD_VERSION.to_owned(),
            db_size: size,
            leader: MEMBER_ID,
            raft_index: stats.revision,
            raft_term: 1,
            raft_applied_index: stats.revision,
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner: false,
        }))
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for Maintenance {
    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: header(self.engine.revision()?),
            members: vec![pb::Member {
                id: MEMBER_ID,
                name: self.name.clone(),
                peer_ur_ls: Vec::new(),
                client_ur_ls: vec![self.url.clone()],
                is_learner: false,
            }],
        }))
    }
}
