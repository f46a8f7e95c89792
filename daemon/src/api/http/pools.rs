//! `/v1/pools/...`: pools and their volumes. Each handler parses, runs one operation (changes
//! through the executor) and renders; volume data streams both ways with bounded memory
//! (upload: `PUT .../data?offset=N`, resumable; download: `GET .../data?offset=&length=`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use hyper::{Request, StatusCode};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::auth::Caller;
use super::error::ApiError;
use super::request::{
    content_type, decode_segment, flag, is_xml, query, read_body, text, wants_xml,
};
use super::response::{json_response, no_content, xml_response, Response};
use super::Ctx;
use crate::ops::volumes::{
    PoolDefine, PoolUndefine, Vol, VolClone, VolCreate, VolDelete, VolDownload, VolImport,
    VolResize, VolUpload,
};
use crate::ops::{Executor, Target};
use crate::service::storage::{CloneRequest, ImportRequest};

/// The pool endpoints (see `routes::ROUTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolEndpoint {
    List,
    Define,
    Info,
    Undefine,
    Xml,
    Volumes,
    CreateVolume,
    Volume,
    DeleteVolume,
    VolumeXml,
    Resize,
    Clone,
    Upload,
    Download,
    Import,
}

impl PoolEndpoint {
    pub fn info(self) -> &'static crate::ops::OpInfo {
        use crate::ops::table as t;
        match self {
            PoolEndpoint::List => &t::POOL_LIST,
            PoolEndpoint::Define => &t::POOL_DEFINE,
            PoolEndpoint::Info => &t::POOL_INFO,
            PoolEndpoint::Undefine => &t::POOL_UNDEFINE,
            PoolEndpoint::Xml => &t::POOL_XML,
            PoolEndpoint::Volumes => &t::VOL_LIST,
            PoolEndpoint::CreateVolume => &t::VOL_CREATE,
            PoolEndpoint::Volume => &t::VOL_INFO,
            PoolEndpoint::DeleteVolume => &t::VOL_DELETE,
            PoolEndpoint::VolumeXml => &t::VOL_XML,
            PoolEndpoint::Resize => &t::VOL_RESIZE,
            PoolEndpoint::Clone => &t::VOL_CLONE,
            PoolEndpoint::Upload => &t::VOL_UPLOAD,
            PoolEndpoint::Download => &t::VOL_DOWNLOAD,
            PoolEndpoint::Import => &t::VOL_IMPORT,
        }
    }
}

/// An upload whose client sends nothing for this long is cut off.
const UPLOAD_IDLE: Duration = Duration::from_secs(60);
/// Body chunks queued between the socket and the file.
const QUEUED: usize = 8;

/// `/v1/pools/{pool}/volumes/{volume}/...`: the pool and volume segments, percent-decoded.
fn segments(path: &str) -> Result<(String, String), ApiError> {
    let mut s = path.split('/').skip(3);
    let pool = decode_segment(s.next().unwrap_or_default())?;
    let volume = decode_segment(s.nth(1).unwrap_or_default())?;
    Ok((pool, volume))
}

fn number(
    q: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<Option<u64>, ApiError> {
    q.get(key)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("query parameter {key}: {v:?} is not a byte count"))
            })
        })
        .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeBody {
    capacity: u64,
    #[serde(default)]
    shrink: bool,
}

pub(crate) async fn dispatch(
    endpoint: PoolEndpoint,
    req: Request<Incoming>,
    ctx: &Ctx,
    caller: Caller,
) -> Result<Response, ApiError> {
    let svc = &ctx.service;
    let exec = Executor::new(svc.clone());
    let actor = caller.actor;
    let (pool, volume) = segments(req.uri().path())?;
    let vol = || Vol::new(pool.clone(), volume.clone());
    match endpoint {
        PoolEndpoint::List => Ok(json_response(StatusCode::OK, &svc.pool_list().await?)),
        PoolEndpoint::Info => Ok(json_response(StatusCode::OK, &svc.pool_info(&pool).await?)),
        PoolEndpoint::Xml => Ok(xml_response(StatusCode::OK, svc.pool_xml(&pool).await?)),
        PoolEndpoint::Define => {
            let xml = content_type(&req).is_some_and(|m| is_xml(&m));
            let body = read_body(req).await?;
            let op = PoolDefine::parse(text(&body)?, xml);
            let view = exec.run(actor, Target::Local, op).await?;
            Ok(json_response(StatusCode::CREATED, &view))
        }
        PoolEndpoint::Undefine => {
            exec.run(actor, Target::Local, PoolUndefine { pool })
                .await?;
            Ok(no_content())
        }
        PoolEndpoint::Volumes => Ok(json_response(StatusCode::OK, &svc.vol_list(&pool).await?)),
        PoolEndpoint::CreateVolume => {
            let xml = content_type(&req).is_some_and(|m| is_xml(&m));
            let body = read_body(req).await?;
            let op = VolCreate::parse(pool, text(&body)?, xml);
            let info = exec.run(actor, Target::Local, op).await?;
            Ok(json_response(StatusCode::CREATED, &info))
        }
        PoolEndpoint::Volume => {
            let info = svc.vol_info(&pool, &volume).await?;
            if wants_xml(&req) {
                Ok(xml_response(StatusCode::OK, info.to_xml()))
            } else {
                Ok(json_response(StatusCode::OK, &info))
            }
        }
        PoolEndpoint::VolumeXml => Ok(xml_response(
            StatusCode::OK,
            svc.vol_info(&pool, &volume).await?.to_xml(),
        )),
        PoolEndpoint::DeleteVolume => {
            exec.run(actor, Target::Local, VolDelete { vol: vol() })
                .await?;
            Ok(no_content())
        }
        PoolEndpoint::Resize => {
            let body: ResizeBody = parse_json(&read_body(req).await?)?;
            let op = VolResize {
                vol: vol(),
                capacity: body.capacity,
                shrink: body.shrink,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        PoolEndpoint::Clone => {
            let wait = flag(&query(&req)?, "wait", true)?;
            let request: CloneRequest = parse_json(&read_body(req).await?)?;
            let op = VolClone {
                vol: vol(),
                request,
            };
            if wait {
                let info = exec.run(actor, Target::Local, op).await?;
                return Ok(json_response(StatusCode::CREATED, &info));
            }
            let op = exec.spawn(actor, Target::Local, op)?;
            let mut r = json_response(StatusCode::ACCEPTED, &op);
            if let Ok(v) = HeaderValue::from_str(&format!("/v1/operations/{}", op.id)) {
                r.headers_mut().insert(LOCATION, v);
            }
            Ok(r)
        }
        PoolEndpoint::Import => {
            let wait = flag(&query(&req)?, "wait", true)?;
            let request: ImportRequest = parse_json(&read_body(req).await?)?;
            let op = VolImport {
                vol: vol(),
                request,
            };
            if wait {
                let info = exec.run(actor, Target::Local, op).await?;
                return Ok(json_response(StatusCode::CREATED, &info));
            }
            let op = exec.spawn(actor, Target::Local, op)?;
            let mut r = json_response(StatusCode::ACCEPTED, &op);
            if let Ok(v) = HeaderValue::from_str(&format!("/v1/operations/{}", op.id)) {
                r.headers_mut().insert(LOCATION, v);
            }
            Ok(r)
        }
        PoolEndpoint::Upload => {
            let q = query(&req)?;
            let offset = number(&q, "offset")?.unwrap_or(0);
            let length = req
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let (tx, rx) = mpsc::channel(QUEUED);
            tokio::spawn(pump(req.into_body(), tx));
            let op = VolUpload {
                vol: vol(),
                offset,
                length,
                data: rx,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        PoolEndpoint::Download => {
            let q = query(&req)?;
            let op = VolDownload {
                vol: vol(),
                offset: number(&q, "offset")?.unwrap_or(0),
                length: number(&q, "length")?,
            };
            let (total, rx) = exec.run(actor, Target::Local, op).await?;
            let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                let chunk = rx.recv().await?;
                Some((Ok::<_, std::convert::Infallible>(Frame::data(chunk)), rx))
            });
            let mut r = hyper::Response::new(StreamBody::new(frames).boxed_unsync());
            let h = r.headers_mut();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(CONTENT_LENGTH, HeaderValue::from(total));
            Ok(r)
        }
    }
}

/// Moves the request body into the upload's queue (bounded: a full queue stops reading the
/// socket); a client that stalls or breaks off ends the upload with an error.
async fn pump(mut body: Incoming, tx: mpsc::Sender<Result<Bytes, String>>) {
    loop {
        let frame = match tokio::time::timeout(UPLOAD_IDLE, body.frame()).await {
            Err(_) => Err(format!("no data for {}s", UPLOAD_IDLE.as_secs())),
            Ok(None) => return,
            Ok(Some(Err(e))) => Err(format!("the upload broke off: {e}")),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Ok(data),
                Err(_) => continue,
            },
        };
        let failed = frame.is_err();
        if tx.send(frame).await.is_err() || failed {
            return;
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}
