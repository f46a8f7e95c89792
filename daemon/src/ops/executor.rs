//! The one executor every face calls, with the caller (actor) passed explicitly. It owns the
//! access check, detaching (the work runs in its own task, so a caller that gives up never
//! leaves it half done), the tracing span, the one audit record per operation (success,
//! refusal and failure alike), the per-operation metrics, background runs and the routing to
//! a local or remote target. The service below holds the behaviour only.

use std::time::Instant;

use novacron_domain::Error;
use tracing::Instrument;

use super::{Failure, Operation, Target};
use crate::service::audit::{as_actor, with_actor, Actor};
use crate::service::operations::Operation as Background;
use crate::service::Service;

#[derive(Clone)]
pub struct Executor {
    svc: Service,
}

impl Executor {
    pub fn new(svc: Service) -> Executor {
        Executor { svc }
    }

    pub fn service(&self) -> &Service {
        &self.svc
    }

    /// Runs `op` on `target` for `actor` to its end, even if the caller stops waiting.
    pub async fn run<O: Operation>(
        &self,
        actor: Actor,
        target: Target,
        op: O,
    ) -> Result<O::Response, O::Failure> {
        let svc = self.svc.clone();
        tokio::spawn(as_actor(actor.clone(), execute(svc, actor, target, op)))
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("operation task failed: {e}")).into()))
    }

    /// Runs `op` in the background; its progress is `Service::operation`. A local domain must
    /// exist now, so a typo fails at once rather than in the operation.
    pub fn spawn<O: Operation>(
        &self,
        actor: Actor,
        target: Target,
        op: O,
    ) -> Result<Background, Error> {
        let info = op.info();
        if let Err(why) = info.access.check(actor.role, info.what) {
            let e = Error::Forbidden {
                message: why,
                details: Vec::new(),
            };
            with_actor(actor, || {
                self.svc.audit_log().record_outcome(
                    info.name,
                    op.target(),
                    "forbidden",
                    Some(e.to_string()),
                )
            });
            return Err(e);
        }
        if target == Target::Local && info.domain {
            self.svc.status(op.target())?;
        }
        let domain = op.target().to_owned();
        let svc = self.svc.clone();
        // The operation outlives the request: it carries the requester along for the audit.
        Ok(self.svc.background().spawn(&domain, info.name, async move {
            let work = execute(svc, actor.clone(), target, op);
            as_actor(actor, work)
                .await
                .map(drop)
                .map_err(Failure::into_error)
        }))
    }
}

/// The work of one operation, in its own task: check, span, run, count, audit.
async fn execute<O: Operation>(
    svc: Service,
    actor: Actor,
    target: Target,
    op: O,
) -> Result<O::Response, O::Failure> {
    let info = op.info();
    let started = Instant::now();
    let domain = op.target().to_owned();
    let audit_name = match &target {
        // Remote operations name a vendor host's VM, not one of ours.
        Target::Remote(host) => format!("remote {} on {host}", op.audit_name()),
        Target::Local => op.audit_name().into_owned(),
    };
    let checked = info
        .access
        .check(actor.role, info.what)
        .map_err(|message| Error::Forbidden {
            message,
            details: Vec::new(),
        })
        .and_then(|()| op.check());
    let result = match checked {
        Err(e) => Err(O::Failure::from(e)),
        Ok(()) => {
            let uuid = match target {
                Target::Local if info.domain => svc.status(&domain).ok().and_then(|s| s.uuid),
                Target::Local => None,
                Target::Remote(_) => None,
            };
            let host = match &target {
                Target::Remote(h) => Some(h.clone()),
                Target::Local => None,
            };
            let span = tracing::info_span!(
                "op",
                domain = %domain,
                uuid,
                host,
                op = info.name,
                via = actor.via
            );
            match target {
                Target::Local => op.local(svc.clone()).instrument(span).await,
                Target::Remote(host) => op.remote(svc.clone(), host).instrument(span).await,
            }
        }
    };
    let code = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    crate::service::metrics::record_outcome(info.name, code, started.elapsed());
    if info.audited {
        let error = result.as_ref().err().map(ToString::to_string);
        svc.audit_log()
            .record_outcome(&audit_name, &domain, code, error);
    }
    result
}
