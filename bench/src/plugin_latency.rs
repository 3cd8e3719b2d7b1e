//! `plugin-latency`: Mount+Unmount pairs against `voltool serve` and the floor server.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::Barrier;

use crate::http::PluginConn;

const WARMUP_PAIRS: usize = 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The voltool binary to benchmark.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/voltool"))]
    voltool: PathBuf,
    /// Mount+Unmount pairs per (server, scenario).
    #[arg(long, default_value_t = 1000)]
    ops: usize,
    /// Concurrent clients in the concurrent scenario, each with its own connection and volume.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Also write the results (with a header: date, kernel, CPUs, command line) to FILE.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
}

/// One (server, scenario) measurement.
struct Row {
    server: &'static str,
    scenario: String,
    /// Per-pair latencies, sorted.
    lat: Vec<Duration>,
    wall: Duration,
}

impl Row {
    fn pct(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.lat.len() as f64).ceil() as usize;
        self.lat[rank.clamp(1, self.lat.len()) - 1]
    }
    fn max(&self) -> Duration {
        self.lat.last().copied().unwrap_or_default()
    }
    fn ops_per_sec(&self) -> f64 {
        self.lat.len() as f64 / self.wall.as_secs_f64()
    }
}

pub async fn run(args: Args) -> Result<()> {
    ensure!(args.ops > 0 && args.clients > 0, "--ops and --clients must be at least 1");
    ensure!(
        args.voltool.is_file(),
        "no voltool binary at {}; run `cargo build --release -p voltool`",
        args.voltool.display()
    );
    let dir = tempfile::Builder::new().prefix("voltool-bench-").tempdir().context("create a temp dir")?;
    // Files we create are owned by our effective (fs) uid: no unsafe geteuid() needed.
    if std::fs::metadata(dir.path())?.uid() != 0 {
        bail!("plugin-latency must run as root: voltool's Mount does a real bind mount (try sudo)");
    }
    let (voltool_sock, floor_sock) = (dir.path().join("plugin.sock"), dir.path().join("floor.sock"));
    let mut voltool = Command::new(&args.voltool)
        .arg("serve")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--plugin-socket")
        .arg(&voltool_sock)
        .arg("--api-socket")
        .arg(dir.path().join("api.sock"))
        .env("VOLTOOL_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {} serve", args.voltool.display()))?;
    let floor = Command::new(std::env::current_exe().context("find our own binary")?)
        .arg("floor-server")
        .arg(&floor_sock)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start voltool-bench floor-server");
    let result = match floor {
        Ok(mut floor) => {
            let r = measure(&args, &mut voltool, &voltool_sock, &mut floor, &floor_sock).await;
            stop(floor).await;
            r
        }
        Err(e) => Err(e),
    };
    stop(voltool).await;
    release_mounts(dir.path()).await;
    let rows = result?;
    let table = render(&rows, &args);
    println!("{table}");
    if let Some(file) = &args.markdown {
        let text = format!("{}\n{table}", header().await);
        std::fs::write(file, text).with_context(|| format!("write {}", file.display()))?;
    }
    Ok(())
}

async fn stop(mut child: Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// After a failure mid-run a bind mount may be left under the temp dir; lazily unmount
/// anything there so the temp dir can be removed.
async fn release_mounts(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let prefix = dir.to_string_lossy();
    let mut points: Vec<&str> =
        info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| p.starts_with(&*prefix)).collect();
    points.reverse();
    for p in points {
        eprintln!("voltool-bench: unmounting leftover {p}");
        let _ = Command::new("umount").arg("-l").arg(p).status().await;
    }
}

async fn wait_ready(child: &mut Child, socket: &Path, what: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited before it listened on {}: {status}", socket.display());
        }
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        ensure!(start.elapsed() < Duration::from_secs(10), "{what} did not listen on {} within 10s", socket.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn measure(
    args: &Args,
    voltool: &mut Child,
    voltool_sock: &Path,
    floor: &mut Child,
    floor_sock: &Path,
) -> Result<Vec<Row>> {
    wait_ready(voltool, voltool_sock, "voltool serve").await?;
    wait_ready(floor, floor_sock, "floor-server").await?;
    let servers: [(&'static str, &Path); 2] = [("voltool", voltool_sock), ("floor", floor_sock)];
    for (_, sock) in servers {
        let mut conn = PluginConn::connect(sock).await?;
        for name in std::iter::once("bench-solo".to_string()).chain((0..args.clients).map(|c| format!("bench-c{c}"))) {
            conn.call("/VolumeDriver.Create", &json!({ "Name": name, "Opts": {} })).await?;
        }
        let mut lat = Vec::new();
        for i in 0..WARMUP_PAIRS {
            pair(&mut conn, "bench-solo", &format!("warmup-{i}"), &mut lat).await?;
        }
    }
    let mut rows = Vec::new();
    for (server, sock) in servers {
        rows.push(sequential(server, sock, args.ops).await?);
    }
    for (server, sock) in servers {
        rows.push(concurrent(server, sock, args.ops, args.clients).await?);
    }
    Ok(rows)
}

/// One op: Mount then Unmount with the same ID; pushes the pair's latency.
async fn pair(conn: &mut PluginConn, volume: &str, id: &str, lat: &mut Vec<Duration>) -> Result<()> {
    let body = json!({ "Name": volume, "ID": id });
    let t = Instant::now();
    let reply = conn.call("/VolumeDriver.Mount", &body).await?;
    conn.call("/VolumeDriver.Unmount", &body).await?;
    lat.push(t.elapsed());
    match reply.get("Mountpoint").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => Ok(()),
        _ => bail!("Mount of {volume} answered without a Mountpoint: {reply}"),
    }
}

async fn sequential(server: &'static str, sock: &Path, ops: usize) -> Result<Row> {
    let mut conn = PluginConn::connect(sock).await?;
    let mut lat = Vec::with_capacity(ops);
    let start = Instant::now();
    for i in 0..ops {
        pair(&mut conn, "bench-solo", &format!("seq-{i}"), &mut lat).await?;
    }
    let wall = start.elapsed();
    lat.sort();
    Ok(Row { server, scenario: "1 client".into(), lat, wall })
}

async fn concurrent(server: &'static str, sock: &Path, ops: usize, clients: usize) -> Result<Row> {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let n = ops / clients + usize::from(c < ops % clients);
        let (sock, barrier) = (sock.to_path_buf(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let conn = PluginConn::connect(&sock).await;
            barrier.wait().await; // released even on a failed connect, so nobody hangs
            let mut conn = conn?;
            let (volume, mut lat) = (format!("bench-c{c}"), Vec::with_capacity(n));
            for i in 0..n {
                pair(&mut conn, &volume, &format!("conc-{c}-{i}"), &mut lat).await?;
            }
            anyhow::Ok(lat)
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut lat = Vec::with_capacity(ops);
    for t in tasks {
        lat.extend(t.await.context("client task panicked")??);
    }
    let wall = start.elapsed();
    lat.sort();
    Ok(Row { server, scenario: format!("{clients} concurrent clients"), lat, wall })
}

fn us(d: Duration) -> String {
    format!("{}", d.as_micros())
}

fn render(rows: &[Row], args: &Args) -> String {
    let mut s = format!(
        "Mount+Unmount pairs over the plugin socket, {} pairs per row (after {WARMUP_PAIRS} warm-up pairs); \
         latency of one pair in µs.\n\n",
        args.ops
    );
    s += "| server | scenario | p50 (µs) | p99 (µs) | max (µs) | throughput (pairs/s) |\n";
    s += "|---|---|---:|---:|---:|---:|\n";
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {:.0} |\n",
            r.server,
            r.scenario,
            us(r.pct(50.0)),
            us(r.pct(99.0)),
            us(r.max()),
            r.ops_per_sec()
        );
    }
    s += "\n| scenario | p50 voltool/floor | p99 voltool/floor |\n|---|---:|---:|\n";
    for v in rows.iter().filter(|r| r.server == "voltool") {
        if let Some(f) = rows.iter().find(|r| r.server == "floor" && r.scenario == v.scenario) {
            let ratio = |p| v.pct(p).as_secs_f64() / f.pct(p).as_secs_f64();
            s += &format!("| {} | {:.1}× | {:.1}× |\n", v.scenario, ratio(50.0), ratio(99.0));
        }
    }
    s
}

async fn header() -> String {
    async fn sh(cmd: &str, args: &[&str]) -> String {
        match Command::new(cmd).args(args).output().await {
            Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Err(e) => format!("({cmd}: {e})"),
        }
    }
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let cmdline: Vec<String> = std::env::args().collect();
    format!(
        "# voltool-bench plugin-latency\n\n- date: {}\n- kernel (`uname -r`): {}\n- CPUs (nproc): {cpus}\n- command: `{}`\n",
        sh("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]).await,
        sh("uname", &["-r"]).await,
        cmdline.join(" ")
    )
}
