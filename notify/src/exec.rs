//! `exec:` notifiers: a program of the operator's, run once per event.
//!
//! `url = "exec:/usr/local/bin/hook --flag value"`: the program (an absolute path, checked to
//! be an executable file when the configuration is read) and its arguments, split at spaces —
//! no shell, so nothing in an event can be interpreted as shell syntax. The event's JSON (the
//! webhook body) is on its stdin. The environment is cleared (the daemon's may hold cloud
//! credentials) and set to `PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
//! `VOLTOOL_EVENT` (the kind), `VOLTOOL_HOST`, `VOLTOOL_TEXT`, and, when the event has them,
//! `VOLTOOL_VOLUME`, `VOLTOOL_BACKUP_ID`, `VOLTOOL_TARGET`, `VOLTOOL_REASON`.
//!
//! Exit 0 is delivered; anything else is a failure, retried like the others, whose message
//! ends with the last line of what the program wrote to stderr (at most 512 bytes kept). After
//! the notifier's timeout the program is killed (SIGKILL).
//!
//! Limitation: only the program itself is killed; processes it started in the background
//! outlive it (give them their own timeout).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::NotifyConfig;
use crate::error::{Failure, NotifyError};
use crate::event::one_line;
use crate::notifiers::Payload;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How much of the program's stderr is kept for the error message.
const STDERR_KEEP: usize = 512;

/// A command hook.
#[derive(Debug)]
pub(crate) struct Exec {
    program: PathBuf,
    args: Vec<String>,
}

impl Exec {
    /// `rest` is the URL after `exec:`.
    pub(crate) fn from_config(name: &str, rest: &str, cfg: &NotifyConfig) -> Result<Exec, NotifyError> {
        let err = |field, reason: String| NotifyError::config(name, field, reason);
        let mut words = rest.split_whitespace().map(str::to_string);
        let program = PathBuf::from(words.next().unwrap_or_default());
        if !program.is_absolute() {
            return Err(err("url", "write exec:/absolute/path/to/program [ARG...]".into()));
        }
        let meta = std::fs::metadata(&program).map_err(|e| err("url", format!("{}: {e}", program.display())))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(err("url", format!("{} is not an executable file", program.display())));
        }
        if cfg.secret.is_some() {
            return Err(err("secret", "exec hooks take no secret: the program can read its own".into()));
        }
        Ok(Exec { program, args: words.collect() })
    }

    /// Runs the program for `payload`; the caller's timeout ends it (the child is killed when
    /// this future is dropped).
    pub(crate) async fn send(&self, notifier: &str, shown_url: &str, payload: &Payload) -> Result<(), Failure> {
        let fail = |reason: String| NotifyError::Send { notifier: notifier.into(), url: shown_url.into(), reason };
        let e = &payload.event;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", PATH)
            .env("VOLTOOL_EVENT", e.kind.as_str())
            .env("VOLTOOL_HOST", &e.host)
            .env("VOLTOOL_TEXT", &payload.text)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let optional = [
            ("VOLTOOL_VOLUME", &e.volume),
            ("VOLTOOL_BACKUP_ID", &e.backup_id),
            ("VOLTOOL_TARGET", &e.target),
            ("VOLTOOL_REASON", &e.reason),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().map_err(|err| Failure::Transient(fail(format!("cannot start: {err}"))))?;
        let stdin = child.stdin.take();
        let body = payload.body.clone();
        let write = async move {
            if let Some(mut stdin) = stdin {
                // A hook that does not read its stdin is fine: ignore EPIPE and the like.
                let _ = stdin.write_all(&body).await;
            }
        };
        let stderr = child.stderr.take().map(|s| tokio::spawn(read_tail(s)));
        let (_, status) = tokio::join!(write, child.wait());
        let status = status.map_err(|err| Failure::Transient(fail(format!("wait: {err}"))))?;
        if status.success() {
            return Ok(());
        }
        // A background child of the hook may hold stderr open: do not wait for it long.
        let tail = match stderr {
            Some(t) => tokio::time::timeout(Duration::from_millis(100), t).await.ok().and_then(Result::ok),
            None => None,
        };
        let tail = tail.map(|t| format!(": {t}")).unwrap_or_default();
        Err(Failure::Transient(fail(format!("{status}{tail}"))))
    }
}

/// The last non-empty line of `r` (bounded), reading to the end so the writer never blocks.
async fn read_tail(mut r: tokio::process::ChildStderr) -> String {
    let mut keep: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        keep.extend_from_slice(&buf[..n]);
        if keep.len() > 2 * STDERR_KEEP {
            keep.drain(..keep.len() - STDERR_KEEP);
        }
    }
    let text = String::from_utf8_lossy(&keep);
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line: String = line.chars().rev().take(STDERR_KEEP).collect::<Vec<_>>().into_iter().rev().collect();
    one_line(line.trim())
}
