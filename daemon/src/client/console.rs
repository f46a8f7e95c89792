//! `novactl console`: a ticket, then the console websocket over the same target (Unix socket,
//! TCP or TLS) through hyper's client upgrade.

use hyper::header::{CONNECTION, UPGRADE};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::domain_path;
use crate::http_client::{read_bounded, Client, ClientError};

/// The console's websocket: binary frames of output; send binary frames to type.
pub type ConsoleSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

pub(super) async fn open(
    client: &Client,
    name: &str,
    writer: bool,
) -> Result<ConsoleSocket, ClientError> {
    let minted: Value = client
        .json(Method::POST, &domain_path(name, "/console/ticket"), None)
        .await?;
    let ticket = minted["ticket"]
        .as_str()
        .ok_or_else(|| ClientError::InvalidRequest("the daemon sent no ticket".into()))?;
    let mode = if writer { "writer" } else { "viewer" };
    let path = domain_path(name, &format!("/console?ticket={ticket}&mode={mode}"));
    let response = client
        .send_with(Method::GET, &path, |b| {
            b.header(CONNECTION, "Upgrade")
                .header(UPGRADE, "websocket")
                .header("Sec-WebSocket-Version", "13")
                .header("Sec-WebSocket-Key", generate_key())
        })
        .await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status().as_u16();
        let body = read_bounded(response.into_body(), client.max_body()).await?;
        return Err(ClientError::from_response(status, &body));
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| ClientError::InvalidRequest(format!("websocket upgrade: {e}")))?;
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await)
}
