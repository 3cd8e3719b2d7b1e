//! `voltool doctor`: the daemon's view of the host (or this process's, when no daemon
//! answers), plus whether the Docker engine is reachable.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use hyper::Method;
use serde_json::json;
use voltool_plugin::doctor::{self, DoctorReport};
use voltool_runtime::probe;

use crate::cli::DoctorArgs;
use crate::client::{Api, raw};
use crate::output;

pub async fn run(api: &Api, args: DoctorArgs) -> Result<ExitCode> {
    let (report, source) = match tokio::time::timeout(Duration::from_secs(5), api.get::<DoctorReport>("/v1/doctor"))
        .await
    {
        Ok(Ok(r)) => (r, "the voltool daemon".to_string()),
        Ok(Err(e)) => (doctor::assess(probe::kernel_report(&args.state_dir)), format!("this process ({e:#})")),
        Err(_) => {
            (doctor::assess(probe::kernel_report(&args.state_dir)), "this process (the daemon did not answer)".into())
        }
    };
    let docker = match raw(&args.docker_socket, Method::GET, "/_ping", None, Duration::from_secs(3)).await {
        Ok((s, body)) if s.is_success() => {
            (true, format!("reachable at {} ({})", args.docker_socket.display(), String::from_utf8_lossy(&body)))
        }
        Ok((s, _)) => (false, format!("{} answered HTTP {s}", args.docker_socket.display())),
        Err(e) => (false, format!("not reachable at {}: {e}", args.docker_socket.display())),
    };
    if args.json {
        output::json(
            &json!({ "source": source, "report": report, "docker": { "reachable": docker.0, "detail": docker.1 } }),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("Host capabilities as seen by {source}:");
    for f in &report.findings {
        println!("  [{}] {}: {}", if f.available { "ok" } else { "--" }, f.feature, f.detail);
    }
    println!("  [{}] docker engine: {}", if docker.0 { "ok" } else { "--" }, docker.1);
    let k = &report.kernel;
    println!(
        "Kernel: loop devices {}, FUSE {}, quota support {}, state dir on {}",
        yes(k.loop_devices),
        yes(k.fuse),
        yes(k.kernel_quota),
        k.state_dir_fs.as_deref().unwrap_or("unknown")
    );
    Ok(ExitCode::SUCCESS)
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
