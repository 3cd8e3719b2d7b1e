//! `[[notify]]` blocks are checked up front, errors name the notifier and the field, and no
//! secret ever shows.

use voltool_notify::{EventKind, Notifiers, NotifyError};

use crate::{configs, fast, no_secrets};

fn error(toml_text: &str) -> String {
    let cfg = configs(toml_text);
    let secrets = |name: &str, _: &str| (name == "known").then(|| b"s3cr3t-value".to_vec());
    Notifiers::with_options(&cfg, &secrets, fast()).expect_err("config is refused").to_string()
}

fn parse_error(toml_text: &str) -> String {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct File {
        notify: Vec<voltool_notify::NotifyConfig>,
    }
    toml::from_str::<File>(toml_text).expect_err("toml is refused").to_string()
}

/// (the blocks, what the error starts with): each is refused naming the notifier and field.
const REFUSED: &[(&str, &str)] = &[
    ("name = \"x\"\nurl = \"ftp://host/\"", "notifier x: url: unknown scheme ftp: use http(s)://, smtp(s):// or exec:"),
    ("url = \"http://a/\"\n[[notify]]\nurl = \"not a url\"", "notifier notify-2: url: relative URL without a base"),
    ("url = \"exec:bin/hook\"", "notifier notify-1: url: write exec:/absolute/path"),
    ("url = \"exec:/nonexistent/hook\"", "notifier notify-1: url: /nonexistent/hook: "),
    ("url = \"smtp://mail.example.com?to=a@example.com\"", "notifier notify-1: from: missing"),
    ("url = \"smtp://mail.example.com?from=a@b.c&to=d@e.f&tls=maybe\"", "notifier notify-1: url: tls=maybe"),
    ("url = \"smtp://mail.example.com?from=a@b.c&to=d@e.f&cc=x\"", "notifier notify-1: url: unknown parameter cc"),
    ("url = \"smtp://mail.example.com?from=a@b.c\"\nto = [\"not an address\"]", "notifier notify-1: to: "),
    ("url = \"http://a/\"\ntemplate = \"{volum} failed\"", "notifier notify-1: template: unknown placeholder {volum}"),
    ("url = \"http://a/\"\ntimeout = \"ten\"", "notifier notify-1: timeout: "),
    ("url = \"http://a/\"\nretries = 50", "notifier notify-1: retries: "),
    ("url = \"http://a/\"\non = []", "notifier notify-1: on: "),
    ("url = \"http://a/\"\nfrom = \"a@b.c\"", "notifier notify-1: from: "),
    ("url = \"exec:/bin/true\"\nsecret = \"known\"", "notifier notify-1: secret: exec hooks take no secret"),
    (
        "name = \"a\"\nurl = \"http://a/\"\n[[notify]]\nname = \"a\"\nurl = \"http://b/\"",
        "notifier a: name: two notifiers have this name",
    ),
    ("name = \"a b\"\nurl = \"http://a/\"", "notifier a b: name: "),
];

#[test]
fn bad_blocks_are_refused_naming_the_notifier_and_field() {
    for (blocks, want) in REFUSED {
        let e = error(&format!("[[notify]]\n{blocks}\n"));
        assert!(e.starts_with(want), "{blocks}:\n got  {e}\n want {want}...");
    }
}

#[test]
fn unknown_events_and_fields_are_refused_by_serde() {
    let e = parse_error("[[notify]]\nurl = \"http://a/\"\non = [\"backup-exploded\"]\n");
    assert!(e.contains("backup-exploded") && e.contains("backup-failed") && e.contains("volume-near-full"), "{e}");
    let e = parse_error("[[notify]]\nurl = \"http://a/\"\nurls = \"x\"\n");
    assert!(e.contains("urls"), "{e}");
    let e = parse_error("[[notify]]\nurl = \"http://a/\"\non = [\"test\"]\n");
    assert!(e.contains("test"), "{e}");
}

#[test]
fn passwords_in_urls_are_refused_and_never_shown() {
    for url in
        ["smtp://bob:hunter2xyz@mail.example.com?from=a@b.c&to=d@e.f", "https://bob:hunter2xyz@hooks.example.com/"]
    {
        let cfg = configs(&format!("[[notify]]\nname = \"m\"\nurl = \"{url}\"\n"));
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("hunter2xyz") && !debug.contains("bob"), "{debug}");
        let e = Notifiers::with_options(&cfg, &no_secrets, fast()).unwrap_err().to_string();
        assert!(e.starts_with("notifier m: url: a password in the URL is refused"), "{e}");
        assert!(!e.contains("hunter2xyz"), "{e}");
    }
}

#[test]
fn secrets_are_checked_and_never_in_debug() {
    let e = error("[[notify]]\nurl = \"https://hooks.example.com/\"\nsecret = \"missing\"\n");
    assert!(e.contains("secret missing is missing or not bound to hooks.example.com"), "{e}");
    let e = error("[[notify]]\nurl = \"smtp://u@mail.example.com?from=a@b.c&to=d@e.f&tls=none\"\nsecret = \"known\"\n");
    assert!(e.contains("never sent without TLS"), "{e}");
    let e = error("[[notify]]\nurl = \"smtp://u@mail.example.com?from=a@b.c&to=d@e.f\"\n");
    assert!(e.starts_with("notifier notify-1: secret: "), "{e}");

    let cfg = configs(
        "[[notify]]\nurl = \"https://hooks.example.com/services/T0/TOKEN123\"\nsecret = \"known\"\n\
         [[notify]]\nurl = \"smtps://u@mail.example.com?from=a@b.c&to=d@e.f\"\nsecret = \"known\"\n",
    );
    let secrets = |name: &str, _: &str| (name == "known").then(|| b"s3cr3t-value".to_vec());
    let n = Notifiers::with_options(&cfg, &secrets, fast()).unwrap();
    for debug in [format!("{n:?}"), format!("{n:#?}"), format!("{cfg:?}")] {
        assert!(!debug.contains("s3cr3t") && !debug.contains("TOKEN123"), "{debug}");
    }
    assert!(format!("{n:?}").contains("https://hooks.example.com/…"));
}

#[test]
fn defaults() {
    let cfg = configs("[[notify]]\nurl = \"http://a/\"\n[[notify]]\nurl = \"exec:/bin/true\"\n");
    assert_eq!(cfg[0].on, EventKind::defaults());
    let n = Notifiers::with_options(&cfg, &no_secrets, fast()).unwrap();
    assert_eq!(n.names(), ["notify-1", "notify-2"]);
    assert!(matches!(
        Notifiers::with_options(&[], &no_secrets, fast()).unwrap(),
        n if n.names().is_empty()
    ));
}

#[tokio::test]
async fn send_test_without_notifiers_says_what_to_do() {
    let n = Notifiers::with_options(&[], &no_secrets, fast()).unwrap();
    let e = n.send_test(None).await.unwrap_err();
    assert!(matches!(e, NotifyError::NoNotifiers));
    assert!(e.to_string().contains("[[notify]]"));
}
