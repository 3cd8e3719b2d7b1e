//! `smtp://` and `smtps://` notifiers: one plain-text mail per event, sent with `lettre`.
//!
//! URL: `smtp://USER@HOST:PORT?from=ADDR&to=ADDR,ADDR&tls=MODE`. `USER` (optional) logs in
//! with the password held in the notifier's `secret`; a password in the URL is refused. Ports
//! default to 587 (`smtp://`, submission) and 465 (`smtps://`). `from`/`to` may be fields of
//! the block instead of the query.
//!
//! TLS: `smtps://` speaks TLS from the first byte (implicit TLS, RFC 8314). `smtp://` upgrades
//! with STARTTLS, and by default **requires** it (`tls=required`): opportunistic STARTTLS is
//! stripped by anyone on the path who deletes the server's `STARTTLS` line, and the mail
//! carries host and volume names, failure reasons and possibly a password. `tls=opportunistic`
//! (upgrade when offered) and `tls=none` (never) are for a relay on the same host or a
//! trusted segment, and are refused together with a `secret` so a password is never sent in
//! clear. Certificates are checked against the system's roots (rustls, aws-lc-rs).

use std::fmt;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{NotifyConfig, SecretSource, resolve_secret};
use crate::error::{Failure, NotifyError, chain};
use crate::event::{Event, format_time};
use crate::notifiers::Payload;

/// A mail notifier.
pub(crate) struct Mail {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

/// By hand: the transport holds the SMTP password.
impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail").field("from", &self.from.to_string()).field("to", &self.to.len()).finish()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TlsMode {
    Required,
    Opportunistic,
    None,
    Implicit,
}

/// What the URL's query says.
#[derive(Default)]
struct Query {
    from: Option<String>,
    to: Vec<String>,
    tls: Option<String>,
}

fn query(name: &str, url: &url::Url) -> Result<Query, NotifyError> {
    let mut q = Query::default();
    for (k, v) in url.query_pairs() {
        match &*k {
            "from" => q.from = Some(v.into_owned()),
            "to" => q.to.extend(v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty())),
            "tls" => q.tls = Some(v.into_owned()),
            other => {
                return Err(NotifyError::config(
                    name,
                    "url",
                    format!("unknown parameter {other}: use from=, to= and tls="),
                ));
            }
        }
    }
    Ok(q)
}

fn mailboxes(name: &str, field: &'static str, list: &[String]) -> Result<Vec<Mailbox>, NotifyError> {
    list.iter()
        .map(|a| a.parse::<Mailbox>().map_err(|e| NotifyError::config(name, field, format!("{a:?}: {e}"))))
        .collect()
}

impl Mail {
    pub(crate) fn from_config(
        name: &str,
        url: &url::Url,
        cfg: &NotifyConfig,
        secrets: &dyn SecretSource,
        timeout: Duration,
    ) -> Result<Mail, NotifyError> {
        let err = |field, reason: String| NotifyError::config(name, field, reason);
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| err("url", "has no host".into()))?;
        // IPv6 literals come bracketed; the socket address and TLS name want them bare.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        if url.path().len() > 1 {
            return Err(err("url", "a mail URL has no path: write smtp://USER@HOST:PORT?from=..&to=..".into()));
        }
        let q = query(name, url)?;
        let mode = match (url.scheme(), q.tls.as_deref()) {
            ("smtps", None | Some("implicit")) => TlsMode::Implicit,
            ("smtps", Some(t)) => return Err(err("url", format!("tls={t}: smtps:// is always TLS; drop tls="))),
            (_, None | Some("required")) => TlsMode::Required,
            (_, Some("opportunistic")) => TlsMode::Opportunistic,
            (_, Some("none")) => TlsMode::None,
            (_, Some(t)) => return Err(err("url", format!("tls={t}: use required, opportunistic or none"))),
        };
        let from = match (&q.from, &cfg.from) {
            (Some(_), Some(_)) => return Err(err("from", "given both in the URL and as a field: keep one".into())),
            (Some(f), None) | (None, Some(f)) => f.clone(),
            (None, None) => return Err(err("from", "missing: add ?from=ADDR to the URL or a `from` field".into())),
        };
        let to = match (q.to.is_empty(), cfg.to.is_empty()) {
            (false, false) => return Err(err("to", "given both in the URL and as a field: keep one".into())),
            (true, true) => return Err(err("to", "missing: add ?to=ADDR,ADDR to the URL or a `to` field".into())),
            (false, true) => q.to,
            (true, false) => cfg.to.clone(),
        };
        let from = mailboxes(name, "from", std::slice::from_ref(&from))?.remove(0);
        let to = mailboxes(name, "to", &to)?;
        let tls = |build: fn(TlsParameters) -> Tls| {
            TlsParameters::builder(host.clone())
                .build_rustls()
                .map(build)
                .map_err(|e| err("url", format!("tls setup: {}", chain(&e))))
        };
        let tls = match mode {
            TlsMode::Required => tls(Tls::Required)?,
            TlsMode::Opportunistic => tls(Tls::Opportunistic)?,
            TlsMode::Implicit => tls(Tls::Wrapper)?,
            TlsMode::None => Tls::None,
        };
        let port = url.port().unwrap_or(if mode == TlsMode::Implicit { 465 } else { 587 });
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some(c) = credentials(name, url, cfg, secrets, &host, mode)? {
            builder = builder.credentials(c);
        }
        Ok(Mail { transport: builder.build(), from, to })
    }

    /// One mail for `payload`.
    pub(crate) async fn send(&self, notifier: &str, shown_url: &str, payload: &Payload) -> Result<(), Failure> {
        let fail = |reason: String| NotifyError::Send { notifier: notifier.into(), url: shown_url.into(), reason };
        let mut msg = Message::builder().from(self.from.clone()).subject(payload.event.subject());
        for to in &self.to {
            msg = msg.to(to.clone());
        }
        let msg = msg
            .header(ContentType::TEXT_PLAIN)
            .body(body(&payload.event, &payload.text))
            .map_err(|e| Failure::Permanent(fail(format!("cannot build the mail: {e}"))))?;
        match self.transport.send(msg).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(Failure::Permanent(fail(chain(&e)))),
            Err(e) => Err(Failure::Transient(fail(chain(&e)))),
        }
    }
}

/// The login, if the URL names a user; the password is the notifier's secret.
fn credentials(
    name: &str,
    url: &url::Url,
    cfg: &NotifyConfig,
    secrets: &dyn SecretSource,
    host: &str,
    mode: TlsMode,
) -> Result<Option<Credentials>, NotifyError> {
    let err = |field, reason: &str| NotifyError::config(name, field, reason.to_string());
    let user = percent_decode(url.username()).ok_or_else(|| err("url", "the user name is not UTF-8"))?;
    match (user.is_empty(), cfg.secret.is_some()) {
        (true, false) => return Ok(None),
        (true, true) => return Err(err("url", "a secret needs a user name: write smtp://USER@HOST")),
        (false, false) => return Err(err("secret", "the URL names a user: set `secret` to the password's secret")),
        (false, true) => {}
    }
    if matches!(mode, TlsMode::None | TlsMode::Opportunistic) {
        return Err(err("url", "a password is never sent without TLS: drop tls= (STARTTLS required) or use smtps://"));
    }
    let Some(secret) = resolve_secret(name, cfg, host, secrets)? else { return Ok(None) };
    let password =
        String::from_utf8(secret.0.to_vec()).map_err(|_| err("secret", "the SMTP password must be UTF-8 text"))?;
    Ok(Some(Credentials::new(user, password)))
}

/// `%XX` sequences decoded (the URL keeps `@` in a user name as `%40`).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The mail's text: the line of the template (or the summary), then the fields.
fn body(event: &Event, text: &str) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut out = format!(
        "{text}\n\nevent:     {}\nhost:      {}\nvolume:    {}\nbackup id: {}\ntarget:    {}\ntime:      {}\nreason:    {}\n",
        event.kind,
        event.host,
        dash(&event.volume),
        dash(&event.backup_id),
        dash(&event.target),
        format_time(event.at),
        dash(&event.reason),
    );
    for (k, v) in &event.detail {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    #[test]
    fn user_names_are_percent_decoded() {
        assert_eq!(percent_decode("alerts%40example.com").as_deref(), Some("alerts@example.com"));
        assert_eq!(percent_decode("a%2").as_deref(), Some("a%2"));
    }

    #[test]
    fn body_lists_the_fields() {
        let e = Event::new(EventKind::BackupFailed, "n1").volume("db").reason("target full");
        let b = body(&e, "hello");
        assert!(b.starts_with("hello\n\n"));
        assert!(b.contains("volume:    db\n") && b.contains("reason:    target full\n") && b.contains("backup id: -"));
    }
}
