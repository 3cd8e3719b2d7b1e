//! `voltool migrate` (the sending side) and `voltool receive` (the remote side). Both only
//! pipe bytes between their daemon and ssh; the protocol is in `voltool_migrate`.

use std::io::IsTerminal;
use std::pin::Pin;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use voltool_migrate::{Offer, Reply};

use crate::cli::MigrateArgs;
use crate::client::{Api, ReadBody, segment};
use crate::output;

/// Splits `[USER@]HOST[:NEWNAME]`.
fn destination(dest: &str, volume: &str) -> Result<(String, String)> {
    // `[v6::addr]:name`, `host:name`, or just a host.
    let split = if let Some(rest) = dest.strip_prefix('[') {
        rest.find(']').map(|i| (i + 3, rest[i + 1..].strip_prefix(':')))
    } else {
        dest.find(':').map(|i| (i + 1, Some(&dest[i + 1..])))
    };
    let (host, name) = match split {
        Some((i, Some(name))) => (dest[..i - 1].to_string(), name.to_string()),
        _ => (dest.to_string(), volume.to_string()),
    };
    if host.is_empty() || host.starts_with('-') || host.starts_with(':') {
        bail!("destination {dest:?}: expected [USER@]HOST[:NEWNAME]");
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        bail!("destination {dest:?}: {name:?} is not a valid volume name");
    }
    Ok((host, name))
}

/// Counts what goes through to ssh's stdin.
struct Counting<W> {
    inner: W,
    sent: Arc<AtomicU64>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<W> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn read_reply(lines: &mut (impl AsyncBufReadExt + Unpin)) -> Option<Reply> {
    let mut line = String::new();
    match lines.read_line(&mut line).await {
        Ok(n) if n > 0 => serde_json::from_str(&line).ok(),
        _ => None,
    }
}

pub async fn migrate(api: &Api, args: MigrateArgs) -> Result<ExitCode> {
    let (host, newname) = destination(&args.destination, &args.volume)?;
    let offer: Offer = api.get(&format!("/v1/volumes/{}/offer", segment(&args.volume))).await?;
    let mut argv = args.ssh_command.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    if argv.is_empty() {
        bail!("--ssh-command is empty");
    }
    for o in &args.ssh_options {
        if !o.contains('=') {
            bail!("--ssh-option {o:?} must be KEY=VALUE");
        }
        argv.push("-o".into());
        argv.push(o.clone());
    }
    argv.push(host.clone());
    argv.push(format!("{} receive {newname}", args.remote_voltool));
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {:?}", argv[0]))?;
    let mut stdin = child.stdin.take().context("ssh stdin")?;
    let mut out = BufReader::new(child.stdout.take().context("ssh stdout")?);
    let mut err_pipe = child.stderr.take().context("ssh stderr")?;
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s).await;
        s
    });
    let ssh_said = |s: String| {
        let s = s.trim().to_string();
        if s.is_empty() { String::new() } else { format!(": {s}") }
    };
    // 1. Handshake: nothing moves unless the remote can take the volume.
    let mut line = serde_json::to_string(&offer)?;
    line.push('\n');
    let handshake = stdin.write_all(line.as_bytes()).await;
    let ready = match handshake {
        Ok(()) => read_reply(&mut out).await,
        Err(_) => None,
    };
    match ready {
        Some(r) if r.ready => {}
        Some(r) => bail!("{host} refused volume {newname}: {}", r.error.unwrap_or_else(|| "no reason given".into())),
        None => {
            let _ = child.wait().await;
            let said = stderr_task.await.unwrap_or_default();
            bail!(
                "migration to {host} failed before any data moved: ssh or the remote `{} receive` did not answer{}",
                args.remote_voltool,
                ssh_said(said)
            );
        }
    }
    // 2. The stream, straight from the local daemon into ssh.
    let sent = Arc::new(AtomicU64::new(0));
    let bar = (std::io::stderr().is_terminal() && !args.json).then(|| {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} migrating {msg} [{elapsed_precise}] {bytes} sent, {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.set_message(format!("{} to {host}:{newname}", args.volume));
        b.enable_steady_tick(Duration::from_millis(200));
        b
    });
    let tick = bar.clone().map(|b| {
        let sent = sent.clone();
        tokio::spawn(async move {
            loop {
                b.set_position(sent.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let mut counting = Counting { inner: stdin, sent: sent.clone() };
    let streamed =
        api.get_stream(&format!("/v1/volumes/{}/export?framed=true", segment(&args.volume)), &mut counting).await;
    let _ = counting.inner.shutdown().await;
    drop(counting);
    if let Some(t) = tick {
        t.abort();
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    // 3. The remote's verdict.
    let verdict = read_reply(&mut out).await;
    let status = child.wait().await.ok();
    let said = stderr_task.await.unwrap_or_default();
    if let Err(e) = streamed {
        let broken = e
            .chain()
            .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe));
        if !broken {
            bail!(
                "migration of {} to {host} failed: reading the volume here: {e:#}; nothing was kept on {host}",
                args.volume
            );
        }
        let how = status.and_then(|s| s.code()).map_or_else(|| "was killed".to_string(), |c| format!("exited {c}"));
        bail!(
            "migration of {} to {host} failed while sending: the ssh connection ended (ssh {how}; {e:#}){}; nothing was kept on {host}",
            args.volume,
            ssh_said(said)
        );
    }
    let reply = match verdict {
        Some(r) if r.ok => r,
        Some(r) => {
            bail!("{host} did not accept volume {newname}: {}", r.error.unwrap_or_else(|| "no reason given".into()))
        }
        None => bail!(
            "migration to {host} failed: the remote did not confirm (ssh exit {}){}",
            status.and_then(|s| s.code()).map_or_else(|| "by signal".to_string(), |c| c.to_string()),
            ssh_said(said)
        ),
    };
    let (files, bytes) = (reply.files.unwrap_or(0), reply.bytes.unwrap_or(0));
    if args.delete_source {
        api.delete(&format!("/v1/volumes/{}", segment(&args.volume))).await.with_context(|| {
            format!("volume {} was migrated and verified, but removing it here failed", args.volume)
        })?;
    }
    if args.json {
        output::json(&json!({
            "ok": true, "volume": args.volume, "host": host, "name": newname,
            "files": files, "bytes": bytes, "sent_bytes": sent.load(Ordering::Relaxed),
            "source_deleted": args.delete_source,
        }))?;
    } else {
        println!("migrated {} to {host}:{newname} ({files} files, {bytes} bytes, verified)", args.volume);
        if args.delete_source {
            println!("removed local volume {}", args.volume);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The remote side: stdin/stdout are the ssh channel.
pub async fn receive(api: &Api, name: &str) -> Result<ExitCode> {
    let mut stdout = tokio::io::stdout();
    let mut input = BufReader::with_capacity(1 << 20, tokio::io::stdin());
    let mut line = String::new();
    input.read_line(&mut line).await.context("reading the migration offer")?;
    let say = |r: &Reply| {
        let mut s = serde_json::to_string(r).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    };
    let offer: Offer = match serde_json::from_str(&line) {
        Ok(o) => o,
        Err(e) => {
            let r = Reply { error: Some(format!("not a voltool migration offer: {e}")), ..Reply::default() };
            stdout.write_all(say(&r).as_bytes()).await?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let checked: Result<Reply> =
        api.post(&format!("/v1/volumes/{}/receive/check", segment(name)), serde_json::to_value(&offer)?).await;
    if let Err(e) = checked {
        let r = Reply { error: Some(format!("{e:#}")), ..Reply::default() };
        stdout.write_all(say(&r).as_bytes()).await?;
        stdout.flush().await?;
        return Ok(ExitCode::FAILURE);
    }
    stdout.write_all(say(&Reply { ready: true, ..Reply::default() }).as_bytes()).await?;
    stdout.flush().await?;
    // The offer again, then the frames as they arrive.
    let body = std::io::Cursor::new(line.into_bytes()).chain(input);
    let result: Result<serde_json::Value> =
        api.post_stream(&format!("/v1/volumes/{}/receive", segment(name)), ReadBody::new(body)).await;
    let r = match result {
        Ok(v) => Reply {
            ok: true,
            files: v.get("files").and_then(serde_json::Value::as_u64),
            bytes: v.get("bytes").and_then(serde_json::Value::as_u64),
            ..Reply::default()
        },
        Err(e) => Reply { error: Some(format!("{e:#}")), ..Reply::default() },
    };
    stdout.write_all(say(&r).as_bytes()).await?;
    stdout.flush().await?;
    Ok(if r.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::destination;

    #[test]
    fn destinations() {
        assert_eq!(destination("root@db2", "v").unwrap(), ("root@db2".into(), "v".into()));
        assert_eq!(destination("db2:new", "v").unwrap(), ("db2".into(), "new".into()));
        assert_eq!(destination("u@10.0.0.5:n-1", "v").unwrap(), ("u@10.0.0.5".into(), "n-1".into()));
        assert!(destination("db2:bad/name", "v").is_err());
        assert!(destination("-oProxyCommand=x", "v").is_err());
        assert!(destination(":x", "v").is_err());
        assert_eq!(destination("[::1]:n", "v").unwrap(), ("[::1]".into(), "n".into()));
        assert_eq!(destination("[::1]", "v").unwrap(), ("[::1]".into(), "v".into()));
    }
}
