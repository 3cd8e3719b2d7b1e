//! S3 errors in plain words: the reasons [`super::TargetError::S3`] carries ("bucket x does not
//! exist", "cannot connect to endpoint ...: connection refused", "access denied by the server:
//! ...", with what to do next where that is known).
//!
//! Reasons are built from the error's code, message and kind only, never from the request or
//! its headers, so no credential or signature can appear in them; a server's own message is cut
//! to 200 characters.

use std::io;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::dns::ResolveDnsError;

use super::{S3Error, Shared};

/// What users are told to check when the server refuses their credentials.
const CHECK_CREDENTIALS: &str = "check the AWS credentials given to the daemon";

/// The credentials provider's error among the sources of `err`: the request was never sent
/// because no usable credentials were found (none in the chain, a failing profile or process).
pub(super) fn credentials_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a CredentialsError> {
    find_source(err)
}

/// What the credentials provider said: its sources' messages, or its own when it has none.
fn credentials_detail(e: &CredentialsError) -> String {
    let detail = match std::error::Error::source(e) {
        Some(source) => error_chain(source),
        None => e.to_string(),
    };
    detail.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// The messages of an error and its sources, joined by ": ".
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// The first error of type `T` among an error's sources (the error itself included).
fn find_source<'a, T: std::error::Error + 'static>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// A server's message, shortened, for a reason ("" when there is none).
fn server_message(msg: Option<&str>) -> String {
    match msg.map(str::trim).filter(|m| !m.is_empty()) {
        None => String::new(),
        Some(m) => {
            let short: String = m.chars().take(200).collect();
            format!(" ({short})")
        }
    }
}

/// A reason a person understands, from the error's code, message and kind only (never from
/// the request, so no credentials or signatures).
pub(super) fn explain<E>(err: &S3Error<E>, sh: &Shared) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let ep = &sh.endpoint;
    match err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            explain_answer(se.raw().status().as_u16(), e.code(), e.message(), sh)
        }
        SdkError::TimeoutError(_) => format!("endpoint {ep} did not answer in time (request timed out)"),
        SdkError::DispatchFailure(d) => explain_dispatch(err, d.is_timeout(), sh),
        SdkError::ResponseError(r) => {
            format!("unreadable answer from endpoint {ep} (HTTP {}): {}", r.raw().status().as_u16(), error_chain(err))
        }
        _ => format!("the request could not be made: {}", error_chain(err)),
    }
}

/// The server answered with an error: its HTTP `status`, error `code` and `message`.
fn explain_answer(status: u16, code: Option<&str>, message: Option<&str>, sh: &Shared) -> String {
    let bucket = &sh.spec.bucket;
    let creds = CHECK_CREDENTIALS;
    let msg = server_message(message);
    match code {
        Some(
            code @ ("InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "InvalidToken"
            | "ExpiredToken"
            | "TokenRefreshRequired"
            | "InvalidSecurity"
            | "InvalidClientTokenId"
            | "NotSignedUp"),
        ) => format!("access denied by the server: {code} — {creds}"),
        Some(code @ ("AccessDenied" | "AllAccessDisabled" | "AccountProblem")) => {
            format!("access denied by the server: {code}{msg} — {creds} and their permissions on bucket {bucket}")
        }
        Some("NoSuchBucket") => format!("bucket {bucket} does not exist"),
        Some("NoSuchKey") => "the object does not exist".into(),
        Some("NoSuchUpload") => "the multipart upload no longer exists on the server (aborted or expired)".into(),
        Some(code @ ("AuthorizationHeaderMalformed" | "PermanentRedirect" | "IllegalLocationConstraintException")) => {
            format!(
                "the server expects another region ({code}{msg}); the target uses region {} — set the target's region",
                sh.region
            )
        }
        Some("NotImplemented") => format!("the server does not support this request (NotImplemented{msg})"),
        Some(code @ ("SlowDown" | "ServiceUnavailable" | "InternalError")) => {
            format!("the server is overloaded or failing: {code}{msg} (HTTP {status})")
        }
        Some(code @ ("EntityTooSmall" | "EntityTooLarge" | "InvalidPart" | "InvalidPartOrder" | "BadDigest")) => {
            format!("the server refused the upload: {code}{msg}")
        }
        Some(code) if !code.is_empty() && status == 403 => {
            format!("access denied by the server: {code}{msg} — {creds} and their permissions on bucket {bucket}")
        }
        Some(code) if !code.is_empty() => format!("the server answered {code}{msg} (HTTP {status})"),
        _ => explain_status(status, sh),
    }
}

/// An error answer without a code (HEAD answers have no body, hence no code).
fn explain_status(status: u16, sh: &Shared) -> String {
    let bucket = &sh.spec.bucket;
    match status {
        403 => format!(
            "access denied by the server (HTTP 403) — {CHECK_CREDENTIALS} and their permissions on bucket {bucket}"
        ),
        404 => format!("not found (HTTP 404; does bucket {bucket} exist?)"),
        301 | 307 => format!(
            "the server redirects to another region (HTTP {status}); the target uses region {} — set the target's region",
            sh.region
        ),
        400 => format!("the server rejected the request (HTTP 400; a wrong region? the target uses {})", sh.region),
        s if s >= 500 => format!("the server failed (HTTP {s})"),
        s => format!("the server answered HTTP {s}"),
    }
}

/// The request did not reach the server, or no answer came back (`timeout`: the connector
/// says it timed out).
fn explain_dispatch<E>(err: &S3Error<E>, timeout: bool, sh: &Shared) -> String
where
    E: std::error::Error + 'static,
{
    let ep = &sh.endpoint;
    if let Some(creds) = credentials_error(err) {
        let detail = credentials_detail(creds);
        return format!(
            "no usable AWS credentials ({detail}) — give the daemon AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role"
        );
    }
    if let Some(dns) = find_source::<ResolveDnsError>(err) {
        let why = error_chain(dns);
        return if !sh.spec.path_style && sh.spec.endpoint.is_some() {
            format!(
                "cannot reach endpoint {ep}: the host name does not resolve ({why}; without path_style the bucket \
                 is part of the host name, {}.HOST; set path_style=true for servers like MinIO or Ceph)",
                sh.spec.bucket
            )
        } else {
            format!("cannot reach endpoint {ep}: the host name does not resolve ({why})")
        };
    }
    match find_source::<io::Error>(err) {
        Some(io) if io.kind() == io::ErrorKind::ConnectionRefused => {
            format!("cannot connect to endpoint {ep}: connection refused")
        }
        Some(io) if io.kind() == io::ErrorKind::TimedOut => format!("cannot connect to endpoint {ep}: timed out"),
        Some(io) if matches!(io.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => {
            format!("the connection to endpoint {ep} broke: {io}")
        }
        Some(io) => format!("cannot reach endpoint {ep}: {io}"),
        None if timeout => format!("cannot connect to endpoint {ep}: timed out"),
        None => format!("cannot reach endpoint {ep}: {}", error_chain(err)),
    }
}
