//! `/v1/networks/...`: virtual networks. Each handler parses, runs one operation (changes go
//! through the executor) or reads the service (queries), and renders.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use super::auth::Caller;
use super::error::ApiError;
use super::request::{content_type, is_xml, read_body, text, wants_xml};
use super::response::{json_response, no_content, xml_response, Response};
use super::Ctx;
use crate::ops::networks::{NetAutostart, NetDefine, NetDestroy, NetStart, NetUndefine};
use crate::ops::{Executor, Target};
use novacron_domain::network::{network_xml, parse_network, parse_network_json, NetworkConfig};

/// The network endpoints (see `routes::ROUTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkEndpoint {
    List,
    Define,
    Info,
    Xml,
    Undefine,
    Start,
    Stop,
    Autostart,
    Leases,
}

async fn read_network(req: Request<Incoming>) -> Result<NetworkConfig, ApiError> {
    let media = content_type(&req).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a network definition needs Content-Type application/xml or application/json",
        )
    })?;
    let body = read_body(req).await?;
    let body = text(&body)?;
    if is_xml(&media) {
        parse_network(body).map_err(|e| novacron_domain::Error::from(e).into())
    } else if media == "application/json" {
        parse_network_json(body).map_err(Into::into)
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("{media} is not a network definition format (use application/xml or application/json)"),
        ))
    }
}

pub(crate) async fn dispatch(
    endpoint: NetworkEndpoint,
    name: String,
    req: Request<Incoming>,
    ctx: &Ctx,
    caller: Caller,
) -> Result<Response, ApiError> {
    let svc = &ctx.service;
    let nets = svc.networks();
    let exec = Executor::new(svc.clone());
    let actor = caller.actor;
    match endpoint {
        NetworkEndpoint::List => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({
                "networks": nets.list(),
                "foreign_firewalls": nets.foreign_drops(),
            }),
        )),
        NetworkEndpoint::Define => {
            let config = read_network(req).await?;
            let existed = nets.info(&config.name).is_ok();
            let stored = exec.run(actor, Target::Local, NetDefine { config }).await?;
            let code = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_response(code, &nets.info(&stored.name)?))
        }
        NetworkEndpoint::Info => {
            let config = nets.config(&name)?;
            if wants_xml(&req) {
                return Ok(xml_response(StatusCode::OK, network_xml(&config)));
            }
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "info": nets.info(&name)?, "config": config }),
            ))
        }
        NetworkEndpoint::Xml => Ok(xml_response(
            StatusCode::OK,
            network_xml(&nets.config(&name)?),
        )),
        NetworkEndpoint::Undefine => {
            exec.run(actor, Target::Local, NetUndefine { network: name })
                .await?;
            Ok(no_content())
        }
        NetworkEndpoint::Start => {
            exec.run(
                actor,
                Target::Local,
                NetStart {
                    network: name.clone(),
                },
            )
            .await?;
            Ok(json_response(StatusCode::OK, &nets.info(&name)?))
        }
        NetworkEndpoint::Stop => {
            exec.run(
                actor,
                Target::Local,
                NetDestroy {
                    network: name.clone(),
                },
            )
            .await?;
            Ok(json_response(StatusCode::OK, &nets.info(&name)?))
        }
        NetworkEndpoint::Autostart => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                enabled: bool,
            }
            let body: Body = serde_json::from_slice(&read_body(req).await?)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
            let op = NetAutostart {
                network: name.clone(),
                enabled: body.enabled,
            };
            exec.run(actor, Target::Local, op).await?;
            Ok(json_response(StatusCode::OK, &nets.info(&name)?))
        }
        NetworkEndpoint::Leases => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "leases": nets.leases(&name).await? }),
        )),
    }
}
