//! A plugin client like dockerd's: one persistent HTTP/1.1 connection over a unix socket,
//! POSTs of JSON bodies without a Content-Type header.

use std::path::Path;

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

/// One keep-alive connection to a plugin socket.
pub struct PluginConn {
    sender: SendRequest<Full<Bytes>>,
}

impl PluginConn {
    pub async fn connect(socket: &Path) -> Result<Self> {
        let stream = UnixStream::connect(socket).await.with_context(|| format!("connect to {}", socket.display()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake on {}", socket.display()))?;
        tokio::spawn(conn);
        Ok(Self { sender })
    }

    /// POSTs `body` to `endpoint`; fails unless the reply is HTTP 200 with `"Err": ""`.
    pub async fn call(&mut self, endpoint: &str, body: &Value) -> Result<Value> {
        self.sender.ready().await.context("connection closed")?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(endpoint)
            .header("host", "plugin")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = self.sender.send_request(req).await.with_context(|| format!("POST {endpoint}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.with_context(|| format!("read reply to {endpoint}"))?.to_bytes();
        let reply: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{endpoint}: not JSON: {}", String::from_utf8_lossy(&bytes)))?;
        let err = reply.get("Err").and_then(Value::as_str);
        if status != StatusCode::OK || err != Some("") {
            bail!("{endpoint} {body} -> HTTP {status}: {reply}");
        }
        Ok(reply)
    }
}
