//! Mail through a real SMTP server: Python aiosmtpd (installed by
//! `deploy/test-env/notify/setup.sh`), started by the test on a free port of 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use voltool_notify::NotifyError;

use crate::{build, failed_backup, wait_for};

/// The python that has aiosmtpd: `VOLTOOL_TEST_AIOSMTPD_PYTHON`, else setup.sh's venv. `None`
/// means skip (outside CI) — in CI (`CI=true`) a missing server fails the test.
fn python(test: &str) -> Option<PathBuf> {
    let candidate = std::env::var_os("VOLTOOL_TEST_AIOSMTPD_PYTHON").map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(cache.join("voltool-test/notify-venv/bin/python"))
    });
    let works = |p: &PathBuf| {
        Command::new(p).args(["-c", "import aiosmtpd"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    match candidate.filter(works) {
        Some(p) => Some(p),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: aiosmtpd not installed (run deploy/test-env/notify/setup.sh)")
        }
        None => {
            println!("SKIP {test}: aiosmtpd not installed (run deploy/test-env/notify/setup.sh)");
            None
        }
    }
}

/// A running aiosmtpd; killed when dropped.
struct Smtp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Smtp {
    fn start(python: &PathBuf) -> Smtp {
        let dir = tempfile::tempdir().expect("temporary directory");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mail/smtp_server.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start smtp_server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("read the port");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("smtp_server.py said {line:?}"));
        Smtp { child, port, dir }
    }

    /// The messages received so far, in order.
    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 1.. {
            match std::fs::read_to_string(self.dir.path().join(format!("{i}.eml"))) {
                Ok(m) => out.push(m),
                Err(_) => break,
            }
        }
        out
    }
}

#[tokio::test]
async fn a_failed_backup_is_mailed_with_its_reason() {
    let Some(py) = python("a_failed_backup_is_mailed_with_its_reason") else { return };
    let smtp = Smtp::start(&py);
    let n = build(&format!(
        "[[notify]]\nname = \"mail\"\n\
         url = \"smtp://127.0.0.1:{}?from=voltool@example.com&to=ops@example.com,dba@example.com&tls=none\"\n",
        smtp.port
    ));
    n.notify(&failed_backup());
    let stats = wait_for(&n, |s| s[0].delivered + s[0].failed > 0).await;
    assert_eq!((stats[0].delivered, stats[0].failed), (1, 0), "{stats:?}");
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert!(m.contains("X-Envelope-To: ops@example.com,dba@example.com"), "{m}");
    assert!(m.contains("Subject: [voltool] backup-failed: volume db on testhost"), "{m}");
    assert!(m.contains("From: voltool@example.com"), "{m}");
    assert!(m.contains("target s3 full"), "{m}");
    assert!(m.contains("backup id: db-20250102"), "{m}");
}

#[tokio::test]
async fn a_template_is_the_first_line_and_send_test_works() {
    let Some(py) = python("a_template_is_the_first_line_and_send_test_works") else { return };
    let smtp = Smtp::start(&py);
    let n = build(&format!(
        "[[notify]]\nurl = \"smtp://127.0.0.1:{}?tls=opportunistic\"\nfrom = \"v@example.com\"\nto = [\"o@example.com\"]\n\
         template = \"ALERT {{kind}} {{volume}}: {{reason}}\"\n",
        smtp.port
    ));
    let results = n.send_test(None).await.unwrap();
    assert!(results[0].1.is_ok(), "{results:?}");
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains("Subject: [voltool] test: daemon on testhost"), "{}", msgs[0]);
    assert!(msgs[0].contains("ALERT test -: `voltool notify test` for notifier notify-1"), "{}", msgs[0]);
}

#[tokio::test]
async fn starttls_is_required_by_default() {
    let Some(py) = python("starttls_is_required_by_default") else { return };
    let smtp = Smtp::start(&py);
    let n =
        build(&format!("[[notify]]\nurl = \"smtp://127.0.0.1:{}?from=v@example.com&to=o@example.com\"\n", smtp.port));
    let results = n.send_test(None).await.unwrap();
    let err = results[0].1.as_ref().unwrap_err();
    assert!(matches!(err, NotifyError::Send { .. }), "{err}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(smtp.messages().is_empty(), "nothing is sent in clear");
}
