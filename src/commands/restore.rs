//! `voltool restore`, `voltool export`, `voltool import`.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::cli::{RestoreArgs, RestoreFlags};
use crate::client::{Api, ReadBody, segment};
use crate::output;

fn summary(v: &Value) -> String {
    format!(
        "restored {} files ({} bytes, {}{}) into volume {}{}",
        v["files"].as_u64().unwrap_or(0),
        v["bytes"].as_u64().unwrap_or(0),
        v["compression"].as_str().unwrap_or("?"),
        if v["verified_against_manifest"] == true { ", checked against the manifest" } else { "" },
        v["volume"].as_str().unwrap_or("?"),
        if v["created"] == true { " (created)" } else { "" }
    )
}

fn flags_query(f: &RestoreFlags) -> String {
    format!("force={}&allow_devices={}&strip_components={}", f.force, f.allow_devices, f.strip_components)
}

pub async fn restore(api: &Api, args: RestoreArgs) -> Result<ExitCode> {
    let from = &args.from;
    // A local file (or stdin) is streamed to the daemon, so it works when the daemon runs as
    // a managed plugin that cannot see this host's files.
    let local = from == "-" || (!from.contains("://") && Path::new(from).exists());
    let v: Value = if local {
        let input = (from != "-").then(|| Path::new(from.as_str()));
        return import(api, &args.volume, input, &args.opts, args.json).await;
    } else {
        let spinner = (std::io::stderr().is_terminal() && !args.json).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_message(format!("restoring {} from {from}", args.volume));
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let body = json!({
            "from": from,
            "force": args.opts.force,
            "allow_devices": args.opts.allow_devices,
            "strip_components": args.opts.strip_components,
        });
        let r = api.post_long(&format!("/v1/volumes/{}/restore", segment(&args.volume)), body).await;
        if let Some(b) = spinner {
            b.finish_and_clear();
        }
        r?
    };
    if args.json {
        output::json(&v)?
    } else {
        println!("{}", summary(&v))
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn import(
    api: &Api,
    volume: &str,
    input: Option<&Path>,
    flags: &RestoreFlags,
    json_out: bool,
) -> Result<ExitCode> {
    let path = format!("/v1/volumes/{}/import?{}", segment(volume), flags_query(flags));
    let (v, bar): (Value, Option<ProgressBar>) = match input {
        Some(p) => {
            let f = tokio::fs::File::open(p).await.with_context(|| format!("open {}", p.display()))?;
            let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
            let body = ReadBody::new(f);
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
    if json_out {
        output::json(&v)?
    } else {
        eprintln!("{}", summary(&v))
    }
    Ok(ExitCode::SUCCESS)
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
                    eprintln!("exported volume {volume} to {} ({n} bytes)", p.display());
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
