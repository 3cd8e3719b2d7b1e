//! `[[notify]]` blocks ([`NotifyConfig`]) and the checks that turn one into something that can
//! send ([`Spec`]); how secrets reach this crate ([`SecretSource`]).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::NotifyError;
use crate::event::EventKind;
use crate::template::Template;
use crate::{exec, mail, webhook};

/// One `[[notify]]` block of the daemon's TOML file.
///
/// ```toml
/// [[notify]]
/// name = "ops-hook"                                  # default: notify-1, notify-2, ...
/// url = "https://hooks.example.com/voltool"          # or smtp://, smtps://, exec:
/// on = ["backup-failed", "volume-near-full"]        # default: EventKind::defaults()
/// template = "{host}: {kind} on {volume}: {reason}"  # default: Event::summary
/// secret = "ops-hook-key"    # a `voltool secret`: HMAC key (webhook) / SMTP password (mail)
/// timeout = "10s"            # per attempt; ms, s or m; default 10s, at most 5m
/// retries = 2                # attempts after the first; default 2, at most 10
/// ```
///
/// Mail: `url = "smtp://alerts@mail.example.com:587?from=voltool@example.com&to=a@example.com,b@example.com"`
/// (`from` and `to` may be given as fields instead; `?tls=required|opportunistic|none`, see
/// [`crate`]). Exec: `url = "exec:/usr/local/bin/on-voltool-event --flag"` (split at spaces,
/// no shell). A password in a URL is refused: it belongs in a secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotifyConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub url: String,
    #[serde(default = "EventKind::defaults")]
    pub on: Vec<EventKind>,
    #[serde(default)]
    pub template: Option<String>,
    /// The NAME of a voltool secret, never its value.
    #[serde(default)]
    pub secret: Option<String>,
    /// Mail only: the sender, if the URL has no `?from=`.
    #[serde(default)]
    pub from: Option<String>,
    /// Mail only: the recipients, if the URL has no `?to=`.
    #[serde(default)]
    pub to: Vec<String>,
    /// Per-attempt timeout, e.g. `"10s"`, `"500ms"`, `"1m"`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Attempts after the first one.
    #[serde(default)]
    pub retries: Option<u32>,
}

/// Written by hand so a URL's path, query or password (a webhook token, a mistaken password)
/// never reaches a log through `{:?}`.
impl fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("name", &self.name)
            .field("url", &shown_url(&self.url))
            .field("on", &self.on)
            .field("template", &self.template)
            .field("secret", &self.secret)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// Where secret values come from: the daemon's secret store. `server` is the host the value
/// will be sent to or used for (the webhook's or the SMTP server's), so a store that binds
/// secrets to servers (`voltool secret add NAME --server HOST`) can refuse the others.
/// Closures `Fn(&str, &str) -> Option<Vec<u8>>` are sources.
pub trait SecretSource: Send + Sync {
    /// The value of secret `name` for `server`, or `None` when it is missing or not allowed.
    fn secret(&self, name: &str, server: &str) -> Option<Vec<u8>>;
}

impl<F: Fn(&str, &str) -> Option<Vec<u8>> + Send + Sync> SecretSource for F {
    fn secret(&self, name: &str, server: &str) -> Option<Vec<u8>> {
        self(name, server)
    }
}

/// A secret's value: wiped from memory when dropped, `<redacted>` in `Debug`.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) Zeroizing<Vec<u8>>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Resolves `cfg.secret` for `server`, if there is one.
pub(crate) fn resolve_secret(
    name: &str,
    cfg: &NotifyConfig,
    server: &str,
    secrets: &dyn SecretSource,
) -> Result<Option<Secret>, NotifyError> {
    let Some(secret) = &cfg.secret else { return Ok(None) };
    match secrets.secret(secret, server) {
        Some(v) if !v.is_empty() => Ok(Some(Secret(Zeroizing::new(v)))),
        Some(_) => Err(NotifyError::config(name, "secret", format!("secret {secret} is empty"))),
        None => Err(NotifyError::config(
            name,
            "secret",
            format!(
                "secret {secret} is missing or not bound to {server}: add it with \
                 `voltool secret add {secret} --server {server}`"
            ),
        )),
    }
}

/// How a notifier sends.
#[derive(Debug)]
pub(crate) enum Channel {
    Webhook(webhook::Webhook),
    Mail(mail::Mail),
    Exec(exec::Exec),
}

/// A checked `[[notify]]` block.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) name: String,
    pub(crate) shown_url: String,
    pub(crate) on: Vec<EventKind>,
    pub(crate) template: Option<Template>,
    pub(crate) timeout: Duration,
    pub(crate) attempts: u32,
    pub(crate) channel: Channel,
}

pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
pub(crate) const DEFAULT_RETRIES: u32 = 2;
const MAX_RETRIES: u32 = 10;

/// Checks block number `index` (0-based) and builds its channel. `http` is the webhook client,
/// made on first use and shared by every webhook.
pub(crate) fn check(
    index: usize,
    cfg: &NotifyConfig,
    secrets: &dyn SecretSource,
    http: &mut Option<reqwest::Client>,
) -> Result<Spec, NotifyError> {
    let name = match &cfg.name {
        Some(n) => check_name(n)?,
        None => format!("notify-{}", index + 1),
    };
    let err = |field, reason: String| NotifyError::config(&name, field, reason);
    if cfg.on.is_empty() {
        return Err(err("on", "is empty: list the events to send, or leave `on` out for the defaults".into()));
    }
    let template = cfg.template.as_deref().map(Template::parse).transpose().map_err(|e| err("template", e))?;
    let timeout = match &cfg.timeout {
        Some(t) => parse_duration(t).map_err(|e| err("timeout", e))?,
        None => DEFAULT_TIMEOUT,
    };
    let retries = cfg.retries.unwrap_or(DEFAULT_RETRIES);
    if retries > MAX_RETRIES {
        return Err(err("retries", format!("{retries} is more than the {MAX_RETRIES} allowed")));
    }
    let channel = if let Some(rest) = cfg.url.strip_prefix("exec:") {
        Channel::Exec(exec::Exec::from_config(&name, rest, cfg)?)
    } else {
        let url =
            url::Url::parse(&cfg.url).map_err(|e| err("url", format!("{e}: use http(s)://, smtp(s):// or exec:")))?;
        if url.password().is_some() {
            return Err(err(
                "url",
                "a password in the URL is refused: store it with `voltool secret add NAME` and set \
                 `secret = \"NAME\"`"
                    .into(),
            ));
        }
        match url.scheme() {
            "http" | "https" => Channel::Webhook(webhook::Webhook::from_config(&name, url, cfg, secrets, http)?),
            "smtp" | "smtps" => Channel::Mail(mail::Mail::from_config(&name, &url, cfg, secrets, timeout)?),
            other => {
                return Err(err("url", format!("unknown scheme {other}: use http(s)://, smtp(s):// or exec:")));
            }
        }
    };
    if !matches!(channel, Channel::Mail(_)) && (cfg.from.is_some() || !cfg.to.is_empty()) {
        return Err(err("from", "`from` and `to` are for smtp:// and smtps:// notifiers".into()));
    }
    let mut on = cfg.on.clone();
    on.sort();
    on.dedup();
    Ok(Spec { name, shown_url: shown_url(&cfg.url), on, template, timeout, attempts: retries + 1, channel })
}

fn check_name(n: &str) -> Result<String, NotifyError> {
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(n.to_string())
    } else {
        let shown: String = n.chars().take(64).collect();
        Err(NotifyError::config(&crate::event::one_line(&shown), "name", "use 1-64 of A-Z a-z 0-9 - _ ."))
    }
}

/// `"10s"`, `"500ms"`, `"2m"` (a whole number and a unit), between 1 ms and 5 minutes.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration: write e.g. \"10s\" or \"500ms\""))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("{s:?} has no unit: write e.g. \"10s\" or \"500ms\"")),
    };
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(format!("{s:?} is out of range: between 1ms and 5m"));
    }
    Ok(d)
}

/// The URL as messages show it: scheme, host and port; `/…` stands for a path or query (which
/// may hold a token); an exec hook shows its program without arguments.
pub fn shown_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("exec:") {
        let program = rest.split_whitespace().next().unwrap_or("");
        return format!("exec:{}", crate::event::one_line(program));
    }
    let Ok(u) = url::Url::parse(url) else { return "(invalid url)".to_string() };
    let host = u.host_str().unwrap_or("");
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    let more = if u.path().len() > 1 || u.query().is_some() { "/…" } else { "" };
    format!("{}://{host}{port}{more}", u.scheme())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        for bad in ["10", "s", "0s", "6m", "1.5s", "-1s", "10 hours"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shown_urls_hide_paths_queries_and_users() {
        assert_eq!(shown_url("https://hooks.slack.com/services/T0/B0/XXXX"), "https://hooks.slack.com/…");
        assert_eq!(shown_url("http://127.0.0.1:9000/"), "http://127.0.0.1:9000");
        assert_eq!(shown_url("smtp://bob:pw@mail.example.com:587?to=a@b"), "smtp://mail.example.com:587/…");
        assert_eq!(shown_url("exec:/bin/hook --token abc"), "exec:/bin/hook");
        assert_eq!(shown_url("::nonsense"), "(invalid url)");
    }
}
