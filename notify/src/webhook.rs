//! `http://` and `https://` notifiers: one JSON POST per event.
//!
//! Headers: `Content-Type: application/json`, `User-Agent: voltool/VERSION`,
//! `X-Voltool-Event: KIND` and, with a secret, `X-Voltool-Signature: sha256=HEX`, the
//! HMAC-SHA256 of the exact body bytes under the secret ([`signature`]; GitHub's scheme, so
//! receivers written for it verify ours). 2xx is delivered; 5xx, 408, 429, a connection error
//! or a timeout are tried again; any other status is final. Redirects are not followed: the
//! signed body goes only where the configuration says.
//!
//! TLS is rustls with the aws-lc-rs provider (the one the S3 client already uses, so the
//! binary carries one) and the system's trust roots (`rustls-native-certs`), so an internal CA
//! installed on the host works as it does for curl.

use std::sync::Arc;

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::config::{NotifyConfig, Secret, SecretSource, resolve_secret};
use crate::error::{Failure, NotifyError, chain};
use crate::notifiers::Payload;

/// What the `User-Agent` header says.
pub const USER_AGENT: &str = concat!("voltool/", env!("CARGO_PKG_VERSION"));

/// A webhook notifier.
#[derive(Debug)]
pub(crate) struct Webhook {
    url: url::Url,
    key: Option<Secret>,
    client: reqwest::Client,
}

/// `sha256=HEX`: the HMAC-SHA256 of `body` under `key`, as `X-Voltool-Signature` carries it.
/// A receiver recomputes it over the raw body it got and compares in constant time.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length (longer ones are hashed first, RFC 2104 §2).
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhook {
    pub(crate) fn from_config(
        name: &str,
        url: url::Url,
        cfg: &NotifyConfig,
        secrets: &dyn SecretSource,
        http: &mut Option<reqwest::Client>,
    ) -> Result<Webhook, NotifyError> {
        let Some(host) = url.host_str().filter(|h| !h.is_empty()).map(str::to_string) else {
            return Err(NotifyError::config(name, "url", "has no host"));
        };
        if !url.username().is_empty() {
            return Err(NotifyError::config(name, "url", "user names in webhook URLs are not supported"));
        }
        let key = resolve_secret(name, cfg, &host, secrets)?;
        let client = match http {
            Some(c) => c.clone(),
            None => {
                let c = client().map_err(|e| NotifyError::config(name, "url", e))?;
                *http = Some(c.clone());
                c
            }
        };
        Ok(Webhook { url, key, client })
    }

    /// One POST of `payload`, at most `timeout` long.
    pub(crate) async fn send(
        &self,
        notifier: &str,
        shown_url: &str,
        payload: &Payload,
        timeout: std::time::Duration,
    ) -> Result<(), Failure> {
        let mut req = self
            .client
            .post(self.url.clone())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Voltool-Event", payload.event.kind.as_str())
            .body(payload.body.clone());
        if let Some(key) = &self.key {
            req = req.header("X-Voltool-Signature", signature(&key.0, &payload.body));
        }
        let fail =
            |reason: String| NotifyError::Send { notifier: notifier.to_string(), url: shown_url.to_string(), reason };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                let url = shown_url.to_string();
                return Err(Failure::Transient(NotifyError::Timeout {
                    notifier: notifier.into(),
                    url,
                    after: timeout,
                }));
            }
            // `without_url`: the error's Display would show the whole URL, token and all.
            Err(e) => return Err(Failure::Transient(fail(chain(&e.without_url())))),
        };
        let status = resp.status().as_u16();
        let error = |hint| NotifyError::Status { notifier: notifier.into(), url: shown_url.into(), status, hint };
        match status {
            200..=299 => Ok(()),
            408 | 429 | 500..=599 => Err(Failure::Transient(error(""))),
            300..=399 => Err(Failure::Permanent(error(" (redirects are not followed: configure the final URL)"))),
            _ => Err(Failure::Permanent(error(" (not retried: check the URL and the receiver's configuration)"))),
        }
    }
}

/// The HTTP client every webhook shares.
fn client() -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable certificate files are skipped; with no roots at all, https fails at connect
    // time naming the certificate, and http still works.
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("http client setup: {}", chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
