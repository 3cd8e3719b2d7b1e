//! The ssh transport of a migration (the sending side): runs the system `ssh` with
//! `REMOTE_VOLTOOL receive NAME` on the destination, and speaks the handshake and the verdict
//! of the protocol over it (see the crate's documentation).
//!
//! A migration through a [`Session`]:
//!
//! 1. [`destination`] splits `[USER@]HOST[:NEWNAME]`; [`Session::spawn`] starts ssh with its
//!    stdin, stdout and stderr piped (and killed if the session is dropped);
//! 2. [`Session::offer`] sends the [`Offer`] and waits for the remote's `ready`: nothing moves
//!    unless the remote can take the volume;
//! 3. the caller streams the framed volume into [`Session::input`] (which counts the bytes, for
//!    progress: [`Session::sent`]);
//! 4. [`Session::finish`] closes the input, reads the remote's verdict, waits for ssh and
//!    returns the remote's [`Reply`], or why the migration failed — with what ssh said on its
//!    stderr (a host key error, a refused connection) where that explains it.
//!
//! Nothing here prints or reads the environment; which ssh, its options and the remote binary
//! come from the caller. Needs a tokio runtime (the child process and its pipes are tokio's).

use std::io;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

use crate::{Offer, Reply};

/// Why a migration over ssh failed. Messages name the destination host and the volume.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The destination is not `[USER@]HOST[:NEWNAME]`.
    #[error("destination {dest:?}: expected [USER@]HOST[:NEWNAME]")]
    Destination { dest: String },
    /// The destination's NEWNAME (or the volume's name) is not a valid volume name.
    #[error("destination {dest:?}: {name:?} is not a valid volume name")]
    VolumeName { dest: String, name: String },
    /// The ssh command line is empty.
    #[error("no ssh command given")]
    NoCommand,
    /// ssh could not be started.
    #[error("cannot run {program:?}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    /// One of ssh's pipes was not there (`stdin`, `stdout`, `stderr`).
    #[error("ssh {0}")]
    NoPipe(&'static str),
    /// The offer could not be encoded.
    #[error(transparent)]
    Offer(#[from] serde_json::Error),
    /// The remote answered the offer with an error (a missing secret, a volume with data).
    #[error("{host} refused volume {name}: {reason}")]
    Refused { host: String, name: String, reason: String },
    /// No answer to the offer: ssh failed (connection, host key) or the remote voltool did not
    /// run. `said` is ssh's stderr.
    #[error(
        "migration to {host} failed before any data moved: ssh or the remote `{remote_voltool} receive` did not answer{}",
        colon(.said)
    )]
    NoAnswer { host: String, remote_voltool: String, said: String },
    /// Reading the volume from the local daemon failed (`cause`, with its causes).
    #[error("migration of {volume} to {host} failed: reading the volume here: {cause}; nothing was kept on {host}")]
    Local { volume: String, host: String, cause: String },
    /// The ssh connection ended while the volume was being sent. `exit` is ssh's exit code
    /// (`None`: killed by a signal), `cause` the sending side's error, `said` ssh's stderr.
    #[error(
        "migration of {volume} to {host} failed while sending: the ssh connection ended (ssh {}; {cause}){}; nothing was kept on {host}",
        exited(*.exit),
        colon(.said)
    )]
    Cut { volume: String, host: String, exit: Option<i32>, cause: String, said: String },
    /// The remote received the stream but did not take the volume (a check failed).
    #[error("{host} did not accept volume {name}: {reason}")]
    Rejected { host: String, name: String, reason: String },
    /// The remote gave no verdict after the stream. `exit` is ssh's exit code (`None`: by a
    /// signal), `said` its stderr.
    #[error("migration to {host} failed: the remote did not confirm (ssh exit {}){}", exit_code(*.exit), colon(.said))]
    Unconfirmed { host: String, exit: Option<i32>, said: String },
}

/// `": said"`, or nothing when ssh said nothing.
fn colon(said: &str) -> String {
    let s = said.trim();
    if s.is_empty() { String::new() } else { format!(": {s}") }
}

fn exited(exit: Option<i32>) -> String {
    exit.map_or_else(|| "was killed".to_owned(), |c| format!("exited {c}"))
}

fn exit_code(exit: Option<i32>) -> String {
    exit.map_or_else(|| "by signal".to_owned(), |c| c.to_string())
}

/// Where a volume goes: the ssh destination (`[USER@]HOST`) and the volume's name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub host: String,
    pub name: String,
}

/// Splits `[USER@]HOST[:NEWNAME]` (`[v6::addr]:name` too); NEWNAME defaults to `volume`.
///
/// # Errors
/// [`SshError::Destination`] for an empty host or one that ssh would take for an option,
/// [`SshError::VolumeName`] for a name that is not `[A-Za-z0-9_.-]+`.
pub fn destination(dest: &str, volume: &str) -> Result<Destination, SshError> {
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
        return Err(SshError::Destination { dest: dest.to_owned() });
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        return Err(SshError::VolumeName { dest: dest.to_owned(), name });
    }
    Ok(Destination { host, name })
}

/// The ssh command line up to the destination (`ssh -o KEY=VALUE ...`: program first) and the
/// voltool binary to run on the remote host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshCommand {
    pub ssh: Vec<String>,
    pub remote_voltool: String,
}

impl SshCommand {
    /// The whole command line: ssh, its options, the host, and `REMOTE_VOLTOOL receive NAME`.
    ///
    /// # Errors
    /// [`SshError::NoCommand`] when `ssh` is empty.
    pub fn argv(&self, to: &Destination) -> Result<Vec<String>, SshError> {
        if self.ssh.is_empty() {
            return Err(SshError::NoCommand);
        }
        let mut argv = self.ssh.clone();
        argv.push(to.host.clone());
        argv.push(format!("{} receive {}", self.remote_voltool, to.name));
        Ok(argv)
    }
}

/// A running ssh to the destination's `voltool receive`.
#[derive(Debug)]
pub struct Session {
    child: Child,
    input: Counting<ChildStdin>,
    output: BufReader<ChildStdout>,
    /// ssh's stderr, read to the end by a task of its own (so ssh never blocks on it).
    stderr: JoinHandle<String>,
    to: Destination,
    remote_voltool: String,
}

impl Session {
    /// Starts ssh (killed when the session is dropped).
    ///
    /// # Errors
    /// [`SshError::NoCommand`], [`SshError::Spawn`] when ssh cannot be run.
    pub fn spawn(cmd: &SshCommand, to: &Destination) -> Result<Self, SshError> {
        let argv = cmd.argv(to)?;
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| SshError::Spawn { program: argv[0].clone(), source })?;
        let stdin = child.stdin.take().ok_or(SshError::NoPipe("stdin"))?;
        let stdout = child.stdout.take().ok_or(SshError::NoPipe("stdout"))?;
        let mut err_pipe = child.stderr.take().ok_or(SshError::NoPipe("stderr"))?;
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ = err_pipe.read_to_string(&mut s).await;
            s
        });
        Ok(Self {
            child,
            input: Counting { inner: stdin, sent: Arc::default() },
            output: BufReader::new(stdout),
            stderr,
            to: to.clone(),
            remote_voltool: cmd.remote_voltool.clone(),
        })
    }

    /// The handshake: sends the offer and waits for the remote's `ready`.
    ///
    /// # Errors
    /// [`SshError::Refused`] with the remote's reason, [`SshError::NoAnswer`] (with what ssh
    /// said) when no answer came.
    pub async fn offer(&mut self, offer: &Offer) -> Result<(), SshError> {
        let mut line = serde_json::to_string(offer)?;
        line.push('\n');
        let ready = match self.input.inner.write_all(line.as_bytes()).await {
            Ok(()) => read_reply(&mut self.output).await,
            Err(_) => None,
        };
        match ready {
            Some(r) if r.ready => Ok(()),
            Some(r) => Err(SshError::Refused {
                host: self.to.host.clone(),
                name: self.to.name.clone(),
                reason: r.error.unwrap_or_else(|| "no reason given".into()),
            }),
            None => {
                let _ = self.child.wait().await;
                let said = (&mut self.stderr).await.unwrap_or_default();
                Err(SshError::NoAnswer {
                    host: self.to.host.clone(),
                    remote_voltool: self.remote_voltool.clone(),
                    said,
                })
            }
        }
    }

    /// Where the stream goes (ssh's stdin), counting the bytes written.
    pub fn input(&mut self) -> &mut (dyn AsyncWrite + Unpin + Send) {
        &mut self.input
    }

    /// The bytes written to [`Session::input`] so far (for a progress display).
    pub fn sent(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.input.sent)
    }

    /// Ends the stream and takes the remote's verdict; `sent` says how sending the stream
    /// ended on this side.
    ///
    /// # Errors
    /// [`SshError::Local`] or [`SshError::Cut`] as `sent` says, [`SshError::Rejected`] with
    /// the remote's reason, [`SshError::Unconfirmed`] when no verdict came.
    pub async fn finish(mut self, volume: &str, sent: Sent) -> Result<Reply, SshError> {
        let _ = self.input.inner.shutdown().await;
        drop(self.input);
        let verdict = read_reply(&mut self.output).await;
        let exit = self.child.wait().await.ok().and_then(|s| s.code());
        let said = self.stderr.await.unwrap_or_default();
        let (host, name) = (self.to.host, self.to.name);
        match sent {
            Sent::Complete => {}
            Sent::LocalFailed { cause } => return Err(SshError::Local { volume: volume.to_owned(), host, cause }),
            Sent::ConnectionLost { cause } => {
                return Err(SshError::Cut { volume: volume.to_owned(), host, exit, cause, said });
            }
        }
        match verdict {
            Some(r) if r.ok => Ok(r),
            Some(r) => {
                Err(SshError::Rejected { host, name, reason: r.error.unwrap_or_else(|| "no reason given".into()) })
            }
            None => Err(SshError::Unconfirmed { host, exit, said }),
        }
    }
}

/// How sending the stream into [`Session::input`] ended, as the sending side saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Everything was sent.
    Complete,
    /// Reading the volume here failed; `cause` is the error with its causes.
    LocalFailed { cause: String },
    /// Writing into ssh failed (a broken pipe: the connection ended); `cause` as above.
    ConnectionLost { cause: String },
}

/// One JSON line of the remote's, or `None` at the end of its output or for a line that is not
/// a [`Reply`].
async fn read_reply(lines: &mut (impl AsyncBufReadExt + Unpin)) -> Option<Reply> {
    let mut line = String::new();
    match lines.read_line(&mut line).await {
        Ok(n) if n > 0 => serde_json::from_str(&line).ok(),
        _ => None,
    }
}

/// Counts what goes through to ssh's stdin.
#[derive(Debug)]
struct Counting<W> {
    inner: W,
    sent: Arc<AtomicU64>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<W> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "ssh_tests.rs"]
mod tests;
