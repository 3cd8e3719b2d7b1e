//! `voltool doctor`: the daemon's view of the host (or this process's, when no daemon
//! answers), plus whether the Docker engine is reachable.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use hyper::Method;
use serde::Serialize;
use voltool_api::DoctorReport;
use voltool_daemon::views::doctor_report;

use crate::cli::DoctorArgs;
use crate::client::{Api, raw};
use crate::output;

/// `doctor --json`: the report, who made it, and the Docker engine's answer.
#[derive(Serialize)]
struct DoctorOutput {
    source: String,
    report: DoctorReport,
    docker: Docker,
}

#[derive(Serialize)]
struct Docker {
    reachable: bool,
    detail: String,
}

pub async fn run(api: &Api, args: DoctorArgs) -> Result<ExitCode> {
    let (report, source) =
        match tokio::time::timeout(Duration::from_secs(5), api.get::<DoctorReport>("/v1/doctor")).await {
            Ok(Ok(r)) => (r, "the voltool daemon".to_string()),
            Ok(Err(e)) => (doctor_report(&args.state_dir), format!("this process ({e:#})")),
            Err(_) => (doctor_report(&args.state_dir), "this process (the daemon did not answer)".into()),
        };
    let sock = args.docker_socket.display();
    let (reachable, detail) = match raw(&args.docker_socket, Method::GET, "/_ping", None, Duration::from_secs(3)).await
    {
        Ok((s, body)) if s.is_success() => (true, format!("reachable at {sock} ({})", String::from_utf8_lossy(&body))),
        Ok((s, _)) => (false, format!("{sock} answered HTTP {s}")),
        Err(e) => (false, format!("not reachable at {sock}: {e}")),
    };
    let docker = Docker { reachable, detail };
    if args.json {
        output::json(&DoctorOutput { source, report, docker })?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("Host capabilities as seen by {source}:");
    for f in &report.findings {
        println!("  [{}] {}: {}", if f.available { "ok" } else { "--" }, f.feature, f.detail);
    }
    println!("  [{}] docker engine: {}", if docker.reachable { "ok" } else { "--" }, docker.detail);
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
