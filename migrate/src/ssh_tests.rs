//! The destination grammar, and sessions against a fake `ssh` (a shell script playing the
//! remote `voltool receive`), so the handshake, the stream and every verdict are tested
//! without sshd.

use std::sync::atomic::Ordering;

use tokio::io::AsyncWriteExt;

use super::*;

#[test]
fn destinations() {
    let d = |host: &str, name: &str| Destination { host: host.into(), name: name.into() };
    assert_eq!(destination("root@db2", "v").unwrap(), d("root@db2", "v"));
    assert_eq!(destination("db2:new", "v").unwrap(), d("db2", "new"));
    assert_eq!(destination("u@10.0.0.5:n-1", "v").unwrap(), d("u@10.0.0.5", "n-1"));
    assert!(destination("db2:bad/name", "v").is_err());
    assert!(destination("-oProxyCommand=x", "v").is_err());
    assert!(destination(":x", "v").is_err());
    assert_eq!(destination("[::1]:n", "v").unwrap(), d("[::1]", "n"));
    assert_eq!(destination("[::1]", "v").unwrap(), d("[::1]", "v"));
    assert!(matches!(destination("db2:bad/name", "v"), Err(SshError::VolumeName { .. })));
    assert!(matches!(destination("-oProxyCommand=x", "v"), Err(SshError::Destination { .. })));
}

#[test]
fn the_command_line_ends_with_the_host_and_the_remote_receive() {
    let cmd = SshCommand {
        ssh: vec!["ssh".into(), "-o".into(), "ConnectTimeout=5".into()],
        remote_voltool: "/opt/voltool".into(),
    };
    let argv = cmd.argv(&destination("u@db2:new", "v").unwrap()).unwrap();
    assert_eq!(argv, ["ssh", "-o", "ConnectTimeout=5", "u@db2", "/opt/voltool receive new"]);
    let empty = SshCommand { ssh: Vec::new(), remote_voltool: "voltool".into() };
    assert!(matches!(empty.argv(&destination("db2", "v").unwrap()), Err(SshError::NoCommand)));
}

/// A session whose "ssh" is `sh -c SCRIPT`: the script gets the host as `$1` and the remote
/// command as `$2`, its stdin and stdout are the channel.
fn fake(script: &str) -> Session {
    let cmd =
        SshCommand { ssh: vec!["sh".into(), "-c".into(), script.into(), "sh".into()], remote_voltool: "rv".into() };
    Session::spawn(&cmd, &destination("db2:new", "vol").unwrap()).unwrap()
}

fn offer() -> Offer {
    Offer { protocol: crate::PROTOCOL, volume: "vol".into(), options: Default::default(), secrets: Vec::new() }
}

/// Reads the offer line, says ready, counts the stream's bytes and reports them as `files`.
const RECEIVER: &str =
    r#"read -r offer; echo '{"ready":true}'; n=$(wc -c); echo "{\"ok\":true,\"files\":$n,\"bytes\":7}""#;

#[tokio::test]
async fn a_migration_hands_over_the_stream_and_returns_the_remote_reply() {
    let mut s = fake(RECEIVER);
    s.offer(&offer()).await.unwrap();
    s.input().write_all(&[7u8; 100_000]).await.unwrap();
    assert_eq!(s.sent().load(Ordering::Relaxed), 100_000);
    let reply = s.finish("vol", Sent::Complete).await.unwrap();
    assert_eq!((reply.ok, reply.files, reply.bytes), (true, Some(100_000), Some(7)));
}

#[tokio::test]
async fn the_remote_command_names_the_new_volume() {
    let mut s = fake(r#"read -r offer; echo "{\"ready\":false,\"error\":\"$1 ran $2\"}""#);
    let e = s.offer(&offer()).await.unwrap_err();
    assert!(matches!(&e, SshError::Refused { reason, .. } if reason == "db2 ran rv receive new"), "{e}");
    assert_eq!(e.to_string(), "db2 refused volume new: db2 ran rv receive new");
}

#[tokio::test]
async fn no_answer_says_what_ssh_said() {
    let mut s = fake("echo 'Host key verification failed.' >&2; exit 255");
    let e = s.offer(&offer()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "migration to db2 failed before any data moved: ssh or the remote `rv receive` did not answer: \
         Host key verification failed."
    );
}

#[tokio::test]
async fn verdicts_after_the_stream() {
    let mut s = fake(r#"read -r offer; echo '{"ready":true}'; cat >/dev/null; echo '{"error":"sha256 mismatch"}'"#);
    s.offer(&offer()).await.unwrap();
    let e = s.finish("vol", Sent::Complete).await.unwrap_err();
    assert_eq!(e.to_string(), "db2 did not accept volume new: sha256 mismatch");

    let mut s = fake(r#"read -r offer; echo '{"ready":true}'; cat >/dev/null; echo gone >&2; exit 3"#);
    s.offer(&offer()).await.unwrap();
    let e = s.finish("vol", Sent::Complete).await.unwrap_err();
    assert!(matches!(e, SshError::Unconfirmed { exit: Some(3), .. }), "{e}");
    assert_eq!(e.to_string(), "migration to db2 failed: the remote did not confirm (ssh exit 3): gone");

    let mut s = fake(r#"read -r offer; echo '{"ready":true}'; echo cut >&2; exit 255"#);
    s.offer(&offer()).await.unwrap();
    let e = s.finish("vol", Sent::ConnectionLost { cause: "broken pipe".into() }).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "migration of vol to db2 failed while sending: the ssh connection ended (ssh exited 255; broken pipe): cut; \
         nothing was kept on db2"
    );

    let mut s = fake(RECEIVER);
    s.offer(&offer()).await.unwrap();
    let e = s.finish("vol", Sent::LocalFailed { cause: "volume busy".into() }).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "migration of vol to db2 failed: reading the volume here: volume busy; nothing was kept on db2"
    );
}

#[tokio::test]
async fn a_missing_ssh_is_named() {
    let cmd = SshCommand { ssh: vec!["/nonexistent/ssh".into()], remote_voltool: "voltool".into() };
    let e = Session::spawn(&cmd, &destination("db2", "v").unwrap()).unwrap_err();
    assert!(matches!(&e, SshError::Spawn { program, .. } if program == "/nonexistent/ssh"), "{e}");
}
