use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use voltool_runtime::RecordingMounter;

use super::router;
use crate::backend::Layout;
use crate::service::VolumeService;

const ENDPOINTS: &[&str] = &[
    "/VolumeDriver.Create",
    "/VolumeDriver.Remove",
    "/VolumeDriver.Mount",
    "/VolumeDriver.Unmount",
    "/VolumeDriver.Path",
    "/VolumeDriver.Get",
    "/VolumeDriver.List",
    "/VolumeDriver.Capabilities",
    "/Plugin.Activate",
];

struct Api {
    _dir: tempfile::TempDir,
    router: axum::Router,
    svc: VolumeService,
}

fn api() -> Api {
    let dir = tempfile::tempdir().expect("tmp");
    let layout = Layout { state_dir: dir.path().join("s"), mount_root: dir.path().join("m") };
    let svc = VolumeService::open(layout, crate::service::tests_support::fake_host(&Arc::new(RecordingMounter::new())))
        .expect("open");
    Api { router: router(Arc::new(svc.clone())), svc, _dir: dir }
}

/// Posts like dockerd does: no Content-Type header.
async fn post(a: &Api, path: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::post(path).body(Body::from(body.to_string())).expect("req");
    let resp = a.router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{path} replied non-JSON {bytes:?}: {e}"));
    (status, v)
}

#[tokio::test]
async fn activate_and_capabilities() {
    let a = api();
    assert_eq!(post(&a, "/Plugin.Activate", "").await.1, json!({"Implements": ["VolumeDriver"]}));
    assert_eq!(post(&a, "/VolumeDriver.Capabilities", "").await.1, json!({"Capabilities": {"Scope": "local"}}));
}

#[tokio::test]
async fn lifecycle_without_content_type() {
    let a = api();
    let (s, v) = post(&a, "/VolumeDriver.Create", r#"{"Name":"t1","Opts":{"type":"tmpfs","size":"16m"}}"#).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"Err": ""})));
    let (_, v) = post(&a, "/VolumeDriver.Get", r#"{"Name":"t1"}"#).await;
    assert_eq!(v["Err"], "");
    assert_eq!(v["Volume"]["Name"], "t1");
    let created = v["Volume"]["CreatedAt"].as_str().expect("CreatedAt");
    time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
    assert_eq!(v["Volume"]["Status"]["size_limit"], "16 MiB");
    let (_, v) = post(&a, "/VolumeDriver.Mount", r#"{"Name":"t1","ID":"abc"}"#).await;
    let mp = v["Mountpoint"].as_str().expect("mountpoint").to_string();
    assert!(mp.ends_with("/t1"), "{mp}");
    assert_eq!(post(&a, "/VolumeDriver.Path", r#"{"Name":"t1"}"#).await.1["Mountpoint"], mp.as_str());
    let (_, v) = post(&a, "/VolumeDriver.List", "").await;
    assert_eq!(v["Volumes"].as_array().expect("list").len(), 1);
    assert_eq!(post(&a, "/VolumeDriver.Unmount", r#"{"Name":"t1","ID":"abc"}"#).await.1, json!({"Err": ""}));
    assert_eq!(post(&a, "/VolumeDriver.Remove", r#"{"Name":"t1"}"#).await.1, json!({"Err": ""}));
}

#[tokio::test]
async fn get_unknown_is_null_volume_without_error() {
    let a = api();
    for name in ["nope", "../x"] {
        let (s, v) = post(&a, "/VolumeDriver.Get", &json!({ "Name": name }).to_string()).await;
        assert_eq!((s, v), (StatusCode::OK, json!({"Volume": null, "Err": ""})));
    }
}

#[tokio::test]
async fn empty_and_malformed_bodies_get_clear_errors_everywhere() {
    let a = api();
    for ep in ENDPOINTS {
        for body in ["", "{", "[1,2]", "null", "{\"Name\": 5}", "\u{0}garbage"] {
            let (status, v) = post(&a, ep, body).await;
            let is_static = *ep == "/Plugin.Activate" || *ep == "/VolumeDriver.Capabilities";
            let list_ok = *ep == "/VolumeDriver.List" && (body.is_empty() || body.starts_with("{\"Name"));
            let get_unknown = *ep == "/VolumeDriver.Get" && body.is_empty();
            if is_static || list_ok || get_unknown {
                assert_eq!(status, StatusCode::OK, "{ep} {body:?} {v}");
                continue;
            }
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{ep} {body:?} {v}");
            let err = v["Err"].as_str().expect("Err string");
            assert!(!err.is_empty(), "{ep} {body:?}");
        }
    }
    let (_, v) = post(&a, "/VolumeDriver.Create", "").await;
    assert_eq!(v["Err"], "invalid volume name \"\": the name is empty");
    let (_, v) = post(&a, "/VolumeDriver.Create", "{").await;
    assert!(v["Err"].as_str().expect("err").starts_with("invalid request body for /VolumeDriver.Create"), "{v}");
    assert!(a.svc.list().await.expect("list").is_empty(), "nothing created");
}

#[tokio::test]
async fn bad_create_input_is_refused() {
    let a = api();
    let long = "n".repeat(300);
    for (name, opts, needle) in [
        ("../x", json!({}), "invalid volume name"),
        ("a/b", json!({}), "invalid volume name"),
        (long.as_str(), json!({}), "longer than 128"),
        ("ok", json!({"foo": "1"}), "valid options: type, size, uid, gid, mode"),
        ("ok", json!({"type": "tmpfs", "size": "12Q"}), "unknown unit"),
        ("ok", json!({"type": "zfs"}), "unknown volume type \"zfs\""),
    ] {
        let (s, v) = post(&a, "/VolumeDriver.Create", &json!({"Name": name, "Opts": opts}).to_string()).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(v["Err"].as_str().expect("err").contains(needle), "{v}");
    }
    assert!(a.svc.list().await.expect("list").is_empty());
}

#[tokio::test]
async fn unknown_endpoint_is_404_with_err() {
    let a = api();
    let (s, v) = post(&a, "/VolumeDriver.Nope", "{}").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["Err"].as_str().expect("err").contains("unknown plugin endpoint"));
}

#[test]
fn a_refused_body_names_the_endpoint_and_the_kind_of_fault() {
    use super::request::{NameReq, RequestError, parse};
    let e = parse::<NameReq>("/VolumeDriver.Remove", b"[1,2]").expect_err("array");
    assert!(matches!(e, RequestError::NotObject { got: "an array", .. }), "{e:?}");
    assert_eq!(e.to_string(), "invalid request body for /VolumeDriver.Remove: expected a JSON object, got an array");
    let e = parse::<NameReq>("/VolumeDriver.Remove", b"{").expect_err("truncated");
    assert!(matches!(e, RequestError::Json { endpoint: "/VolumeDriver.Remove", .. }), "{e:?}");
    let e = parse::<NameReq>("/VolumeDriver.Remove", br#"{"Name": 5}"#).expect_err("wrong type");
    assert!(matches!(e, RequestError::Json { .. }), "{e:?}");
    assert_eq!(parse::<NameReq>("/VolumeDriver.Remove", b" \n").expect("empty is {}").name, "");
}
