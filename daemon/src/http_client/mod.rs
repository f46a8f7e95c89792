//! HTTP/1.1 to a novacrond (`daemon/API.md`): where it is ([`Target`]: Unix socket, TCP,
//! TLS), one bounded request/answer, the server's errors as [`ClientError`]. It sits below the
//! service so that both the client library (`crate::client`, novactl) and the service (a
//! migration source talking to its peer daemon) use it without the service importing the client.

mod error;
mod target;
mod tls;

pub use error::ClientError;
pub use target::Target;
pub use tls::Tls;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;

/// Default bound on a response body: far above any real answer, low enough that a confused
/// or hostile peer cannot make the client allocate without limit.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct Client {
    target: Target,
    token: Option<String>,
    max_body: usize,
}

impl Client {
    pub fn new(target: Target) -> Client {
        Client {
            target,
            token: None,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request (needed on TCP).
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    pub fn with_max_body(mut self, bytes: usize) -> Client {
        self.max_body = bytes;
        self
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The bound on an answer's body.
    pub(crate) fn max_body(&self) -> usize {
        self.max_body
    }

    /// A request whose successful answer is JSON of type `T`.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<T, ClientError> {
        let (_, bytes) = self.call(method, path, body, "application/json").await?;
        decode(&bytes)
    }

    /// Sends a request and reads the whole (bounded) answer; a non-2xx answer becomes
    /// `ClientError::Api`.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
        accept: &'static str,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let response = self.send(method, path, body, accept).await?;
        let status = response.status();
        let bytes = read_bounded(response.into_body(), self.max_body).await?;
        if status.is_success() {
            Ok((status, bytes))
        } else {
            Err(ClientError::from_response(status.as_u16(), &bytes))
        }
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
        accept: &'static str,
    ) -> Result<Response<Incoming>, ClientError> {
        let mut builder = self.builder(method, path, accept)?;
        let body = match body {
            Some((bytes, content_type)) => {
                builder = builder.header(CONTENT_TYPE, content_type);
                Full::new(bytes)
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder
            .body(body)
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        self.target.send(request).await
    }

    /// Sends a streamed body (volume uploads) of `length` bytes.
    pub(crate) async fn send_stream<B>(
        &self,
        method: Method,
        path: &str,
        body: B,
        length: u64,
        content_type: &'static str,
    ) -> Result<Response<Incoming>, ClientError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request = self
            .builder(method, path, "application/json")?
            .header(CONTENT_TYPE, content_type)
            .header(hyper::header::CONTENT_LENGTH, length)
            .body(body)
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        self.target.send(request).await
    }

    /// A body-less request with extra headers (the console's websocket upgrade).
    pub(crate) async fn send_with(
        &self,
        method: Method,
        path: &str,
        headers: impl FnOnce(hyper::http::request::Builder) -> hyper::http::request::Builder,
    ) -> Result<Response<Incoming>, ClientError> {
        let request = headers(self.builder(method, path, "*/*")?)
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        self.target.send(request).await
    }

    fn builder(
        &self,
        method: Method,
        path: &str,
        accept: &'static str,
    ) -> Result<hyper::http::request::Builder, ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(self.target.path(path))
            .header(HOST, self.target.authority())
            .header(ACCEPT, accept)
            .header(USER_AGENT, concat!("novactl/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::InvalidRequest(
                    "the token contains characters not allowed in HTTP headers".into(),
                )
            })?;
            builder = builder.header(AUTHORIZATION, value);
        }
        Ok(builder)
    }
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(format!("bad JSON: {e}")))
}

/// Reads a body to its end, refusing to hold more than `limit` bytes.
pub(crate) async fn read_bounded(mut body: Incoming, limit: usize) -> Result<Bytes, ClientError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > limit {
                return Err(ClientError::TooLarge { limit });
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.into())
}

/// Percent-encodes a path segment or query value: domain names may hold any character the
/// domain crate allows, and `/`, `?`, `#`, `%`, `&` or a space must not change the URL's shape.
/// `*` stays as is so name globs read naturally in logs.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'*' | b':' | b'@')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
