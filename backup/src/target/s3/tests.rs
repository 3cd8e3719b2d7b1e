//! The part schedule, the in-flight bound, and the retry policy's and the error explainer's
//! tables (errors built by hand: no server needed).

use std::io;
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_runtime_api::client::dns::ResolveDnsError;

use super::retry::transient;
use super::watch::body_attempt_timeout;
use super::writer::{IN_FLIGHT_BYTES, max_in_flight};
use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[test]
fn default_limit_keeps_8_mib_parts_for_gibs() {
    let covered: u64 = (0..1000).map(|i| part_size(i, 10_000).unwrap()).sum();
    assert!((0..1000).all(|i| part_size(i, 10_000) == Some(8 * MIB)));
    assert!(covered >= 7 * GIB, "{covered}");
    assert_eq!(part_size(1000, 10_000), Some(16 * MIB));
    assert_eq!(part_size(9_999, 10_000), Some(4 * GIB));
    assert_eq!(part_size(10_000, 10_000), None);
    // More than S3's largest object (5 TiB).
    assert!(upload_capacity(10_000) >= 5 << 40, "{}", upload_capacity(10_000));
}

#[test]
fn ten_parts_cover_far_more_than_300_mib() {
    let sizes: Vec<u64> = (0..10).map(|i| part_size(i, 10).unwrap()).collect();
    assert_eq!(sizes[0], 8 * MIB);
    assert_eq!(sizes[5], 256 * MIB);
    assert_eq!(part_size(10, 10), None);
    assert!(upload_capacity(10) >= 300 * MIB);
    assert!(upload_capacity(10) >= 8 * GIB - 8 * MIB, "{}", upload_capacity(10));
    // 300 MiB needs 6 parts: 8+16+32+64+128 = 248 MiB, then the rest.
    let mut total = 0;
    let mut n = 0;
    while total < 300 * MIB {
        total += part_size(n, 10).unwrap();
        n += 1;
    }
    assert_eq!(n, 6);
}

#[test]
fn every_limit_gives_valid_growing_parts() {
    for max_parts in [2, 3, 9, 10, 11, 99, 100, 1000, 1001, 5000, 9999, 10_000] {
        let mut prev = 0;
        for i in 0..max_parts {
            let s = part_size(i, max_parts).unwrap();
            assert!((MIN_PART_SIZE..=MAX_PART_SIZE).contains(&s), "{max_parts} {i} {s}");
            assert!(s >= prev, "{max_parts} {i}");
            prev = s;
        }
        assert_eq!(part_size(max_parts, max_parts), None);
    }
    assert!(upload_capacity(1000) >= 700 * GIB, "{}", upload_capacity(1000));
    assert!(upload_capacity(100) >= 70 * GIB);
    assert_eq!(upload_capacity(2), 24 * MIB);
}

#[test]
fn in_flight_bytes_stay_bounded() {
    assert_eq!(max_in_flight(8 * MIB), 2);
    assert_eq!(max_in_flight(16 * MIB), 1);
    assert_eq!(max_in_flight(32 * MIB), 1);
    assert_eq!(max_in_flight(4 * GIB), 1);
    for s in [5 * MIB, 8 * MIB, 16 * MIB, 32 * MIB] {
        assert!(max_in_flight(s) as u64 * s <= IN_FLIGHT_BYTES.max(s));
    }
    assert_eq!(body_attempt_timeout(8 << 20), Duration::from_secs(60 + 256));
}

type Err = S3Error<HeadObjectError>;

fn answer(status: u16, code: Option<&str>) -> Err {
    let mut meta = ErrorMetadata::builder();
    if let Some(code) = code {
        meta = meta.code(code).message("the server's words");
    }
    let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
    SdkError::service_error(HeadObjectError::generic(meta.build()), raw)
}

fn connect(kind: io::ErrorKind) -> Err {
    SdkError::dispatch_failure(aws_sdk_s3::error::ConnectorError::io(Box::new(io::Error::from(kind))))
}

fn no_credentials() -> Err {
    let creds = CredentialsError::not_loaded("failed to load credentials: no providers in chain");
    let e = aws_sdk_s3::error::ConnectorError::other(Box::new(creds), None);
    SdkError::dispatch_failure(e)
}

#[test]
fn only_errors_marked_temporary_are_retried() {
    let user = SdkError::dispatch_failure(aws_sdk_s3::error::ConnectorError::user("bad request".into()));
    let table: Vec<(&str, Err, bool)> = vec![
        ("timeout", SdkError::timeout_error("slow"), true),
        (
            "unreadable answer",
            SdkError::response_error("garbled", HttpResponse::new(200u16.try_into().unwrap(), SdkBody::empty())),
            true,
        ),
        ("connection refused", connect(io::ErrorKind::ConnectionRefused), true),
        ("connection reset", connect(io::ErrorKind::ConnectionReset), true),
        ("a request the connector refuses", user, false),
        ("no credentials", no_credentials(), false),
        ("503", answer(503, None), true),
        ("500 InternalError", answer(500, Some("InternalError")), true),
        ("429", answer(429, None), true),
        ("SlowDown", answer(503, Some("SlowDown")), true),
        ("RequestTimeout at 400", answer(400, Some("RequestTimeout")), true),
        ("501 NotImplemented", answer(501, Some("NotImplemented")), false),
        ("403 AccessDenied", answer(403, Some("AccessDenied")), false),
        ("404 NoSuchBucket", answer(404, Some("NoSuchBucket")), false),
        ("404 without a body", answer(404, None), false),
        ("400 EntityTooSmall", answer(400, Some("EntityTooSmall")), false),
    ];
    for (what, err, want) in table {
        assert_eq!(transient(&err), want, "{what}");
    }
}

fn shared(rt: &tokio::runtime::Runtime, endpoint: Option<&str>, path_style: bool) -> Shared {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .build();
    let spec = S3Spec {
        bucket: "bkt".into(),
        prefix: String::new(),
        endpoint: endpoint.map(str::to_owned),
        region: None,
        path_style,
        max_parts: 10_000,
        checksums: None,
    };
    Shared {
        client: Client::from_conf(conf),
        spec,
        rt: rt.handle().clone(),
        describe: "s3://bkt".into(),
        endpoint: endpoint.unwrap_or("https://s3.eu-west-1.amazonaws.com").into(),
        region: "eu-west-1".into(),
    }
}

#[test]
fn errors_are_explained_in_plain_words_with_what_to_do() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let sh = shared(&rt, None, false);
    let table: Vec<(Err, &str)> = vec![
        (answer(404, Some("NoSuchBucket")), "bucket bkt does not exist"),
        (answer(403, Some("InvalidAccessKeyId")), "access denied by the server: InvalidAccessKeyId — check the AWS"),
        (answer(403, Some("AccessDenied")), "(the server's words) — check the AWS credentials given to the daemon and"),
        (answer(403, None), "access denied by the server (HTTP 403)"),
        (answer(404, None), "not found (HTTP 404; does bucket bkt exist?)"),
        (answer(301, Some("PermanentRedirect")), "the target uses region eu-west-1 — set the target's region"),
        (answer(503, Some("SlowDown")), "the server is overloaded or failing: SlowDown"),
        (answer(418, Some("Teapot")), "the server answered Teapot (the server's words) (HTTP 418)"),
        (answer(502, None), "the server failed (HTTP 502)"),
        (SdkError::timeout_error("slow"), "endpoint https://s3.eu-west-1.amazonaws.com did not answer in time"),
        (
            connect(io::ErrorKind::ConnectionRefused),
            "cannot connect to endpoint https://s3.eu-west-1.amazonaws.com: connection refused",
        ),
        (
            no_credentials(),
            "no usable AWS credentials (failed to load credentials: no providers in chain) — give the daemon",
        ),
    ];
    for (err, want) in table {
        let got = super::explain::explain(&err, &sh);
        assert!(got.contains(want), "{got:?} lacks {want:?}");
    }
    let minio = shared(&rt, Some("http://minio:9000"), false);
    let lookup: Err = SdkError::dispatch_failure(aws_sdk_s3::error::ConnectorError::io(Box::new(
        ResolveDnsError::new(io::Error::other("dns error: failed to lookup address information")),
    )));
    let got = super::explain::explain(&lookup, &minio);
    assert!(got.contains("set path_style=true"), "{got}");
}

/// `checksums=` reaches the client's config, for requests and for responses alike; unset,
/// the client keeps what the AWS chain gave it.
#[test]
fn checksums_option_configures_the_client() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let target = |checksums: Option<Checksums>| {
        let spec = S3Spec {
            bucket: "bkt".into(),
            prefix: String::new(),
            endpoint: Some("http://127.0.0.1:9".into()),
            region: Some("us-east-1".into()),
            path_style: true,
            max_parts: 10_000,
            checksums,
        };
        S3Target::new(spec, rt.handle().clone()).unwrap()
    };
    let t = target(Some(Checksums::WhenRequired));
    let conf = t.shared.client.config();
    assert_eq!(conf.request_checksum_calculation(), Some(&RequestChecksumCalculation::WhenRequired));
    assert_eq!(conf.response_checksum_validation(), Some(&ResponseChecksumValidation::WhenRequired));
    assert!(format!("{t:?}").contains("checksums: Some(\"when-required\")"), "{t:?}");
    let t = target(Some(Checksums::WhenSupported));
    let conf = t.shared.client.config();
    assert_eq!(conf.request_checksum_calculation(), Some(&RequestChecksumCalculation::WhenSupported));
    assert_eq!(conf.response_checksum_validation(), Some(&ResponseChecksumValidation::WhenSupported));
    let unset = target(None);
    let loaded = block(&rt.handle().clone(), aws_config::defaults(BehaviorVersion::latest()).load());
    assert_eq!(
        unset.shared.client.config().request_checksum_calculation(),
        loaded.request_checksum_calculation().as_ref(),
        "unset: as the AWS chain says"
    );
}
