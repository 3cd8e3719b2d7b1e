//! voltool-notify against real receivers: an HTTP server in the test (axum on 127.0.0.1:0),
//! a real SMTP server (Python aiosmtpd, see `deploy/test-env/notify/setup.sh`), and shell
//! scripts as exec hooks. Plus the configuration checks, through `Notifiers::new`.

use std::time::{Duration, Instant};

use voltool_notify::{Event, EventKind, NotifierStats, Notifiers, NotifyConfig, Options};

mod config;
mod exec;
mod mail;
mod webhook;

/// The `[[notify]]` blocks of a TOML text, as the daemon would read them.
fn configs(toml_text: &str) -> Vec<NotifyConfig> {
    #[derive(serde::Deserialize)]
    struct File {
        notify: Vec<NotifyConfig>,
    }
    toml::from_str::<File>(toml_text).expect("test config parses").notify
}

/// Options with a short backoff, so retries take milliseconds.
fn fast() -> Options {
    Options { host: "testhost".into(), backoff: Duration::from_millis(20), ..Options::default() }
}

fn no_secrets(_: &str, _: &str) -> Option<Vec<u8>> {
    None
}

fn build(toml_text: &str) -> Notifiers {
    Notifiers::with_options(&configs(toml_text), &no_secrets, fast()).expect("notifiers build")
}

fn failed_backup() -> Event {
    Event::new(EventKind::BackupFailed, "testhost").volume("db").backup_id("db-20250102").reason("target s3 full")
}

/// Waits (up to 10 s) until `done` holds for the notifiers' stats; returns them.
async fn wait_for(n: &Notifiers, done: impl Fn(&[NotifierStats]) -> bool) -> Vec<NotifierStats> {
    let start = Instant::now();
    loop {
        let s = n.stats();
        if done(&s) || start.elapsed() > Duration::from_secs(10) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
