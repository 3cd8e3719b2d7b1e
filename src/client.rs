//! HTTP/1.1 over a unix socket: the CLI's side of the management API, and the Docker engine
//! ping used by `doctor`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use voltool_api::ErrorBody;

/// One request over a fresh connection; returns the status and the whole body.
pub async fn raw(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> std::io::Result<(StatusCode, Bytes)> {
    let io_err = |e: hyper::Error| std::io::Error::other(e);
    let work = async {
        let stream = UnixStream::connect(socket).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(io_err)?;
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path).header("host", "voltool");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(std::io::Error::other)?;
        let resp = sender.send_request(req).await.map_err(io_err)?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(io_err)?.to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time")))
}

/// The management API client.
#[derive(Debug, Clone)]
pub struct Api {
    socket: PathBuf,
}

/// Long enough for a create that checks a slow server; the daemon bounds its own work.
const API_TIMEOUT: Duration = Duration::from_secs(120);

impl Api {
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>, timeout: Duration) -> Result<Bytes> {
        let (status, bytes) = match raw(&self.socket, method, path, body, timeout).await {
            Ok(r) => r,
            // The socket file's mode keeps out who is neither root nor in its group.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
                "permission denied: cannot connect to the voltool daemon at {} (root, or a member of the socket's group: [api] group in the daemon's config file)",
                self.socket.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot reach the voltool daemon at {}; is `voltool serve` running (or the voltool plugin enabled)? Set --api-socket or VOLTOOL_API_SOCKET for another daemon",
                        self.socket.display()
                    )
                });
            }
        };
        if !status.is_success() {
            bail!("{}", error_message(&bytes));
        }
        Ok(bytes)
    }

    /// One JSON request and its typed answer.
    async fn call_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<B>,
        timeout: Duration,
    ) -> Result<T> {
        let what = format!("{method} {path}");
        let body = body.map(|b| serde_json::to_vec(&b)).transpose().with_context(|| format!("encoding {what}"))?;
        let bytes = self.call(method, path, body, timeout).await?;
        serde_json::from_slice(&bytes).with_context(|| format!("daemon sent an unexpected reply to {what}"))
    }

    /// `GET path`, the answer parsed as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call_json(Method::GET, path, None::<()>, API_TIMEOUT).await
    }

    /// A GET whose work may take long (reading every manifest on a target): as
    /// [`Self::post_long`].
    pub async fn get_long<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call_json(Method::GET, path, None::<()>, Duration::from_secs(86_400)).await
    }

    /// `POST path` with `body` as JSON, the answer parsed as `T`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: B) -> Result<T> {
        self.call_json(Method::POST, path, Some(body), API_TIMEOUT).await
    }

    /// A POST whose work may take as long as reading a whole backup (verify): no client-side
    /// timeout beyond a day; the daemon bounds its own network calls.
    pub async fn post_long<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: B) -> Result<T> {
        self.call_json(Method::POST, path, Some(body), Duration::from_secs(86_400)).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.call(Method::DELETE, path, None, API_TIMEOUT).await.map(drop)
    }
}

/// The daemon's `{"error": "..."}` message, or the body as text.
fn error_message(bytes: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(bytes)
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}

/// Percent-encodes a name for use as one URL path segment (the daemon validates names; this
/// only keeps a bad one from changing the route).
pub fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
}

impl Api {
    /// DELETEs one path per name (`path(name)`), printing each name that went and each error;
    /// the exit code says whether all went (like `docker volume rm a b c`).
    pub async fn delete_each(&self, names: &[String], path: impl Fn(&str) -> String) -> std::process::ExitCode {
        let mut failed = false;
        for n in names {
            match self.delete(&path(n)).await {
                Ok(()) => println!("{n}"),
                Err(e) => {
                    eprintln!("voltool: {e:#}");
                    failed = true;
                }
            }
        }
        if failed { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
    }
}

/// A request body read from an `AsyncRead` (a file, stdin) as it is sent.
pub struct ReadBody<R> {
    reader: R,
    buf: Vec<u8>,
    /// Bytes sent so far (for a progress bar).
    pub sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R> ReadBody<R> {
    pub fn new(reader: R) -> Self {
        Self { reader, buf: vec![0; 256 * 1024], sent: std::sync::Arc::default() }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> hyper::body::Body for ReadBody<R> {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        let mut rb = tokio::io::ReadBuf::new(&mut this.buf);
        match std::pin::Pin::new(&mut this.reader).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => {
                let data = Bytes::copy_from_slice(rb.filled());
                this.sent.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Api {
    /// POSTs a streamed body (no timeout: it lasts as long as the data) and returns the reply.
    pub async fn post_stream<R, T>(&self, path: &str, body: ReadBody<R>) -> Result<T>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        T: DeserializeOwned,
    {
        let stream = UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("cannot reach the voltool daemon at {}", self.socket.display()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("host", "voltool")
            .header("content-type", "application/octet-stream")
            .body(body)?;
        // A failure here is the daemon closing the connection mid-upload (it refused the stream
        // past the part it drains, or it stopped). Say so as text: the I/O error inside is a
        // broken pipe, which main would take for a closed stdout and exit 0 in silence.
        let resp = sender.send_request(req).await.map_err(|e| {
            anyhow::anyhow!(
                "the daemon closed the connection while the stream was sent ({}); its log says why",
                error_chain(&e)
            )
        })?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{}", error_message(&bytes));
        }
        serde_json::from_slice(&bytes).with_context(|| format!("daemon sent an unexpected reply to POST {path}"))
    }

    /// GETs a streamed body into `out`, returning the bytes written. A body cut off by the
    /// daemon (its side failed) is an error.
    pub async fn get_stream(&self, path: &str, out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send)) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        let stream = UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("cannot reach the voltool daemon at {}", self.socket.display()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req =
            Request::builder().method(Method::GET).uri(path).header("host", "voltool").body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            bail!("{}", error_message(&bytes));
        }
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.context("the daemon stopped the stream (see its log for why)")?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data).await?;
                n += data.len() as u64;
            }
        }
        out.flush().await?;
        Ok(n)
    }
}

/// An error and its sources as one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        parts.push(c.to_string());
        cur = c.source();
    }
    parts.join(": ")
}
