//! Pools and volumes: `/v1/pools/...`, volume data streamed both ways (the file is never held
//! in memory: uploads read it in chunks, downloads write each chunk as it arrives).

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Method;
use novacron_domain::storage::{VolumeConfig, VolumeInfo};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{decode, encode, read_bounded, Client, ClientError};

const CHUNK: usize = 1 << 20;

/// A pool as `GET /v1/pools` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolRow {
    pub name: String,
    pub path: String,
    pub state: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRows {
    pub pool: String,
    pub volumes: Vec<VolumeInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

fn pool_path(pool: &str, rest: &str) -> String {
    format!("/v1/pools/{}{rest}", encode(pool))
}

fn vol_path(pool: &str, vol: &str, rest: &str) -> String {
    format!("/v1/pools/{}/volumes/{}{rest}", encode(pool), encode(vol))
}

fn io_err(what: &str, e: std::io::Error) -> ClientError {
    ClientError::InvalidRequest(format!("{what}: {e}"))
}

impl Client {
    pub async fn pool_list(&self) -> Result<Vec<PoolRow>, ClientError> {
        self.json(Method::GET, "/v1/pools", None).await
    }

    pub async fn pool_info(&self, pool: &str) -> Result<PoolRow, ClientError> {
        self.json(Method::GET, &pool_path(pool, ""), None).await
    }

    pub async fn pool_xml(&self, pool: &str) -> Result<String, ClientError> {
        self.text(&pool_path(pool, "/xml")).await
    }

    pub async fn pool_define(&self, xml: String) -> Result<PoolRow, ClientError> {
        self.json(
            Method::POST,
            "/v1/pools",
            Some((xml.into(), "application/xml")),
        )
        .await
    }

    pub async fn pool_undefine(&self, pool: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &pool_path(pool, ""),
            None,
            "application/json",
        )
        .await
        .map(drop)
    }

    pub async fn vol_list(&self, pool: &str) -> Result<VolumeRows, ClientError> {
        self.json(Method::GET, &pool_path(pool, "/volumes"), None)
            .await
    }

    pub async fn vol_info(&self, pool: &str, vol: &str) -> Result<VolumeInfo, ClientError> {
        self.json(Method::GET, &vol_path(pool, vol, ""), None).await
    }

    pub async fn vol_xml(&self, pool: &str, vol: &str) -> Result<String, ClientError> {
        self.text(&vol_path(pool, vol, "/xml")).await
    }

    pub async fn vol_create(
        &self,
        pool: &str,
        config: &VolumeConfig,
    ) -> Result<VolumeInfo, ClientError> {
        let body =
            serde_json::to_vec(config).map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        self.json(
            Method::POST,
            &pool_path(pool, "/volumes"),
            Some((body.into(), "application/json")),
        )
        .await
    }

    /// `vol-create` from libvirt volume XML.
    pub async fn vol_create_xml(&self, pool: &str, xml: String) -> Result<VolumeInfo, ClientError> {
        self.json(
            Method::POST,
            &pool_path(pool, "/volumes"),
            Some((xml.into(), "application/xml")),
        )
        .await
    }

    pub async fn vol_resize(
        &self,
        pool: &str,
        vol: &str,
        capacity: u64,
        shrink: bool,
    ) -> Result<VolumeInfo, ClientError> {
        let body = json!({ "capacity": capacity, "shrink": shrink }).to_string();
        self.json(
            Method::POST,
            &vol_path(pool, vol, "/resize"),
            Some((body.into(), "application/json")),
        )
        .await
    }

    pub async fn vol_delete(&self, pool: &str, vol: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &vol_path(pool, vol, ""),
            None,
            "application/json",
        )
        .await
        .map(drop)
    }

    /// `wait: false` answers the background operation (`{"id", ...}`) at once.
    pub async fn vol_clone(
        &self,
        pool: &str,
        vol: &str,
        name: &str,
        linked: bool,
        format: Option<&str>,
        wait: bool,
    ) -> Result<Value, ClientError> {
        let mut body = json!({ "name": name, "linked": linked });
        if let Some(f) = format {
            body["format"] = json!(f);
        }
        let q = if wait { "" } else { "?wait=false" };
        self.json(
            Method::POST,
            &vol_path(pool, vol, &format!("/clone{q}")),
            Some((body.to_string().into(), "application/json")),
        )
        .await
    }

    /// `vol-import`: the daemon's host file `path` becomes volume `vol` of `pool`; `wait:
    /// false` answers the background operation at once.
    pub async fn vol_import(
        &self,
        pool: &str,
        vol: &str,
        path: &str,
        move_file: bool,
        format: Option<&str>,
        wait: bool,
    ) -> Result<Value, ClientError> {
        let mut body = json!({ "path": path, "move": move_file });
        if let Some(f) = format {
            body["format"] = json!(f);
        }
        let q = if wait { "" } else { "?wait=false" };
        self.json(
            Method::POST,
            &vol_path(pool, vol, &format!("/import{q}")),
            Some((body.to_string().into(), "application/json")),
        )
        .await
    }

    /// Streams `file` from `offset` into the volume at `offset`; the answer's `end` is
    /// where a broken-off upload resumes.
    pub async fn vol_upload(
        &self,
        pool: &str,
        vol: &str,
        file: &std::path::Path,
        offset: u64,
    ) -> Result<Value, ClientError> {
        let mut f = tokio::fs::File::open(file)
            .await
            .map_err(|e| io_err(&file.display().to_string(), e))?;
        let len = f
            .metadata()
            .await
            .map_err(|e| io_err(&file.display().to_string(), e))?
            .len();
        if offset > len {
            return Err(ClientError::InvalidRequest(format!(
                "offset {offset} is beyond the end of {} ({len} bytes)",
                file.display()
            )));
        }
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| io_err("seek", e))?;
        let chunks = futures_util::stream::unfold(f, |mut f| async move {
            let mut buf = vec![0u8; CHUNK];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(Frame::data(Bytes::from(buf))), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let path = vol_path(pool, vol, &format!("/data?offset={offset}"));
        let response = self
            .send_stream(
                Method::PUT,
                &path,
                StreamBody::new(chunks),
                len - offset,
                "application/octet-stream",
            )
            .await?;
        let status = response.status();
        let bytes = read_bounded(response.into_body(), self.max_body()).await?;
        if !status.is_success() {
            return Err(ClientError::from_response(status.as_u16(), &bytes));
        }
        decode(&bytes)
    }

    /// Streams the volume into `file` (created or truncated); the bytes written.
    pub async fn vol_download(
        &self,
        pool: &str,
        vol: &str,
        file: &std::path::Path,
    ) -> Result<u64, ClientError> {
        let response = self
            .send(
                Method::GET,
                &vol_path(pool, vol, "/data"),
                None,
                "application/octet-stream",
            )
            .await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = read_bounded(response.into_body(), self.max_body()).await?;
            return Err(ClientError::from_response(status.as_u16(), &bytes));
        }
        let mut out = tokio::fs::File::create(file)
            .await
            .map_err(|e| io_err(&file.display().to_string(), e))?;
        let mut body = response.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.write_all(&data)
                    .await
                    .map_err(|e| io_err(&file.display().to_string(), e))?;
                n += data.len() as u64;
            }
        }
        out.flush().await.map_err(|e| io_err("flush", e))?;
        Ok(n)
    }

    async fn text(&self, path: &str) -> Result<String, ClientError> {
        let (_, body) = self
            .call(Method::GET, path, None, "application/xml")
            .await?;
        String::from_utf8(body.to_vec())
            .map_err(|_| ClientError::Protocol("the XML is not UTF-8".into()))
    }
}
