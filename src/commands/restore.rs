//! `voltool restore`, `voltool export`, `voltool import`.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use voltool_api::{RestoreOutcome, RestoreRequest};

use crate::cli::{RestoreArgs, RestoreFlags};
use crate::client::{Api, ReadBody, segment};
use crate::output;

fn summary(v: &RestoreOutcome) -> String {
    let checked = match v.verification.as_str() {
        "manifest" => ", checked against the manifest",
        "catalog" => ", checked against the catalog's sha256 (manifest missing)",
        // An older daemon.
        "" if v.verified_against_manifest => ", checked against the manifest",
        "" => "",
        _ => ", unverified (no manifest)",
    };
    format!(
        "restored {} files ({}, {}{checked}) into volume {}{}",
        v.files,
        crate::human::size(v.bytes),
        v.compression,
        v.volume,
        if v.created { " (created)" } else { "" }
    )
}

/// An import's query string: the restore flags.
fn flags_query(f: &voltool_api::RestoreFlags) -> String {
    format!(
        "force={}&allow_devices={}&strip_components={}&preserve_privileges={}",
        f.force, f.allow_devices, f.strip_components, f.preserve_privileges
    )
}

/// The manifest voltool writes beside `DIR/ID.tar.zst`: `DIR/ID.manifest.json`, if present
/// (beside an encrypted `ID.tar.zst.age`: `ID.manifest.json.age`, which the daemon decrypts).
fn manifest_beside(archive: &Path) -> Option<std::path::PathBuf> {
    let name = archive.file_name()?.to_str()?;
    let m = match name.strip_suffix(".tar.zst.age") {
        Some(id) => archive.with_file_name(format!("{id}.manifest.json.age")),
        None => archive.with_file_name(format!("{}.manifest.json", name.strip_suffix(".tar.zst")?)),
    };
    m.is_file().then_some(m)
}

pub async fn restore(api: &Api, args: RestoreArgs) -> Result<ExitCode> {
    let from = &args.from;
    // A local file (or stdin) is streamed to the daemon, so it works when the daemon runs as
    // a managed plugin that cannot see this host's files.
    let local = from == "-" || (!from.contains("://") && Path::new(from).exists());
    if local && (!args.path.is_empty() || args.to.is_some()) {
        bail!("--path and --to restore paths of a backup ID from the catalog, not of a file");
    }
    let v: RestoreOutcome = if local {
        let input = (from != "-").then(|| Path::new(from.as_str()));
        send(api, &args.volume, input, &args.opts, args.json).await?
    } else {
        let spinner = (std::io::stderr().is_terminal() && !args.json).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_message(format!("restoring {} from {from}", args.volume));
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let body = RestoreRequest {
            from: from.clone(),
            flags: (&args.opts).into(),
            paths: args.path.clone(),
            to: args.to.clone(),
        };
        let r = api.post_long(&format!("/v1/volumes/{}/restore", segment(&args.volume)), body).await;
        if let Some(b) = spinner {
            b.finish_and_clear();
        }
        r?
    };
    print_outcome(&v, args.json, false)
}

/// `voltool import`: the summary goes to stderr.
pub async fn import(
    api: &Api,
    volume: &str,
    input: Option<&Path>,
    flags: &RestoreFlags,
    json_out: bool,
) -> Result<ExitCode> {
    let v = send(api, volume, input, flags, json_out).await?;
    print_outcome(&v, json_out, true)
}

fn print_outcome(v: &RestoreOutcome, json_out: bool, summary_to_stderr: bool) -> Result<ExitCode> {
    if json_out {
        output::json(v)?
    } else if summary_to_stderr {
        eprintln!("{}", summary(v))
    } else {
        println!("{}", summary(v))
    }
    Ok(ExitCode::SUCCESS)
}

/// Streams a local file (with the manifest beside it, if any) or stdin to the daemon's import.
async fn send(
    api: &Api,
    volume: &str,
    input: Option<&Path>,
    flags: &RestoreFlags,
    json_out: bool,
) -> Result<RestoreOutcome> {
    let mut path = format!("/v1/volumes/{}/import?{}", segment(volume), flags_query(&flags.into()));
    let (v, bar): (RestoreOutcome, Option<ProgressBar>) = match input {
        Some(p) => {
            let f = tokio::fs::File::open(p).await.with_context(|| format!("open {}", p.display()))?;
            let mut len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
            // A voltool archive with its manifest beside it: the manifest goes first, and the
            // daemon checks the restore against it.
            let input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match input.and_then(manifest_beside) {
                Some(mp) => {
                    let m = tokio::fs::File::open(&mp).await.with_context(|| format!("open {}", mp.display()))?;
                    let mlen = m.metadata().await.with_context(|| format!("stat {}", mp.display()))?.len();
                    let mname = mp.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    path.push_str(&format!("&manifest_len={mlen}&manifest_name={}", segment(&mname)));
                    len += mlen;
                    Box::new(tokio::io::AsyncReadExt::chain(tokio::io::AsyncReadExt::take(m, mlen), f))
                }
                None => Box::new(f),
            };
            let body = ReadBody::new(input);
            let sent = body.sent.clone();
            let bar = (std::io::stderr().is_terminal() && !json_out).then(|| {
                let b = ProgressBar::new(len);
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_message(format!("restoring {volume}"));
                b
            });
            let tick = bar.clone().map(|b| {
                tokio::spawn(async move {
                    loop {
                        b.set_position(sent.load(Ordering::Relaxed));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                })
            });
            let r = api.post_stream(&path, body).await;
            if let Some(t) = tick {
                t.abort();
            }
            (r?, bar)
        }
        None => {
            if std::io::stdin().is_terminal() {
                bail!("import reads the archive from stdin (or -i FILE); stdin is a terminal");
            }
            (api.post_stream(&path, ReadBody::new(tokio::io::stdin())).await?, None)
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(v)
}

pub async fn export(api: &Api, volume: &str, output: Option<&Path>) -> Result<ExitCode> {
    let path = format!("/v1/volumes/{}/export", segment(volume));
    match output {
        None => {
            if std::io::stdout().is_terminal() {
                bail!("export writes a binary stream; redirect stdout or use -o FILE");
            }
            let mut out = tokio::io::stdout();
            api.get_stream(&path, &mut out).await?;
        }
        Some(p) => {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
            let tmp = p.with_file_name(format!(".{name}.partial"));
            let mut f = tokio::fs::File::create(&tmp).await.with_context(|| format!("create {}", tmp.display()))?;
            match api.get_stream(&path, &mut f).await {
                Ok(n) => {
                    f.sync_all().await?;
                    tokio::fs::rename(&tmp, p).await.with_context(|| format!("rename to {}", p.display()))?;
                    eprintln!("exported volume {volume} to {} ({})", p.display(), crate::human::size(n));
                }
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(e);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
