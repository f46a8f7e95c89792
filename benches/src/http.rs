//! A keep-alive HTTP/1.1 client over a Unix socket, for the API benchmarks.

use std::path::Path;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

pub type Sender = SendRequest<Full<Bytes>>;

/// One connection; requests on it reuse it.
pub async fn connect(socket: &Path) -> Result<Sender> {
    let stream = UnixStream::connect(socket).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request; the status and the whole body.
pub async fn request(
    sender: &mut Sender,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, Bytes)> {
    sender.ready().await?;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}
