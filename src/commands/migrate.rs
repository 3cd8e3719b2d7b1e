//! `voltool migrate` (the sending side) and `voltool receive` (the remote side). Both only
//! pipe bytes between their daemon and ssh; the protocol and the ssh transport are in
//! `voltool_migrate` (`voltool_migrate::ssh`): this file turns the arguments into an ssh
//! command and shows progress and the outcome.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use voltool_api::RestoreOutcome;
use voltool_migrate::ssh::{Destination, Sent, Session, SshCommand, destination};
use voltool_migrate::{Offer, Reply};

use crate::cli::MigrateArgs;
use crate::client::{Api, ReadBody, segment};
use crate::output;

/// The ssh command line of `-e` and `--ssh-option`s.
fn ssh_command(args: &MigrateArgs) -> Result<SshCommand> {
    let mut ssh = args.ssh_command.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    if ssh.is_empty() {
        bail!("--ssh-command is empty");
    }
    for o in &args.ssh_options {
        if !o.contains('=') {
            bail!("--ssh-option {o:?} must be KEY=VALUE");
        }
        ssh.push("-o".into());
        ssh.push(o.clone());
    }
    Ok(SshCommand { ssh, remote_voltool: args.remote_voltool.clone() })
}

/// A spinner with the bytes sent so far on a terminal (none with `--json` or without one);
/// the task that updates it.
fn progress(
    args: &MigrateArgs,
    to: &Destination,
    sent: Arc<AtomicU64>,
) -> Option<(ProgressBar, tokio::task::JoinHandle<()>)> {
    if !std::io::stderr().is_terminal() || args.json {
        return None;
    }
    let b = ProgressBar::new_spinner();
    b.set_style(
        ProgressStyle::with_template("{spinner} migrating {msg} [{elapsed_precise}] {bytes} sent, {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    b.set_message(format!("{} to {}:{}", args.volume, to.host, to.name));
    b.enable_steady_tick(Duration::from_millis(200));
    let bar = b.clone();
    let tick = tokio::spawn(async move {
        loop {
            bar.set_position(sent.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Some((b, tick))
}

pub async fn migrate(api: &Api, args: MigrateArgs) -> Result<ExitCode> {
    let to = destination(&args.destination, &args.volume)?;
    let offer: Offer = api.get(&format!("/v1/volumes/{}/offer", segment(&args.volume))).await?;
    let mut session = Session::spawn(&ssh_command(&args)?, &to)?;
    // 1. Handshake: nothing moves unless the remote can take the volume.
    session.offer(&offer).await?;
    // 2. The stream, straight from the local daemon into ssh.
    let sent = session.sent();
    let shown = progress(&args, &to, Arc::clone(&sent));
    let streamed =
        api.get_stream(&format!("/v1/volumes/{}/export?framed=true", segment(&args.volume)), session.input()).await;
    if let Some((bar, tick)) = shown {
        tick.abort();
        bar.finish_and_clear();
    }
    // 3. The remote's verdict.
    let end = match streamed {
        Ok(_) => Sent::Complete,
        Err(e) => {
            let broken = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            let cause = format!("{e:#}");
            if broken { Sent::ConnectionLost { cause } } else { Sent::LocalFailed { cause } }
        }
    };
    let reply = session.finish(&args.volume, end).await?;
    let (host, newname) = (to.host, to.name);
    let (files, bytes) = (reply.files.unwrap_or(0), reply.bytes.unwrap_or(0));
    if args.delete_source {
        api.delete(&format!("/v1/volumes/{}", segment(&args.volume))).await.with_context(|| {
            format!("volume {} was migrated and verified, but removing it here failed", args.volume)
        })?;
    }
    if args.json {
        output::json(&Migrated {
            bytes,
            files,
            host: &host,
            name: &newname,
            ok: true,
            sent_bytes: sent.load(Ordering::Relaxed),
            source_deleted: args.delete_source,
            volume: &args.volume,
        })?;
    } else {
        println!(
            // The exact byte count, as before: scripts and tests compare it with the source's.
            "migrated {} to {host}:{newname} ({files} files, {bytes} bytes, verified)",
            args.volume
        );
        if args.delete_source {
            println!("removed local volume {}", args.volume);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The remote side: stdin/stdout are the ssh channel.
/// What `voltool migrate --json` prints (keys in the order earlier versions printed them).
#[derive(Serialize)]
struct Migrated<'a> {
    bytes: u64,
    files: u64,
    host: &'a str,
    name: &'a str,
    ok: bool,
    sent_bytes: u64,
    source_deleted: bool,
    volume: &'a str,
}

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
    let checked: Result<Reply> = api.post(&format!("/v1/volumes/{}/receive/check", segment(name)), &offer).await;
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
    let result: Result<RestoreOutcome> =
        api.post_stream(&format!("/v1/volumes/{}/receive", segment(name)), ReadBody::new(body)).await;
    let r = match result {
        Ok(o) => Reply { ok: true, files: Some(o.files), bytes: Some(o.bytes), ..Reply::default() },
        Err(e) => Reply { error: Some(format!("{e:#}")), ..Reply::default() },
    };
    stdout.write_all(say(&r).as_bytes()).await?;
    stdout.flush().await?;
    Ok(if r.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
