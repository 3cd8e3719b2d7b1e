//! What people and machines read (issue 16, items 4 and 5): the CLI's tables keep their
//! columns aligned and say their summaries on stderr; `voltool serve --log-format json` logs
//! one JSON object per line, and every line of a backup run or a restore carries its ID.

mod common;

use common::*;
use serde_json::Value;

/// The daemon's log lines, each parsed: the test fails on a line that is not a JSON object.
fn json_lines(d: &Daemon) -> Vec<Value> {
    let log = d.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(|l| l.is_object() && l["timestamp"].is_string() && l["level"].is_string()), "{log}");
    lines
}

/// Whether `line` was logged inside a span `name` whose field `key` is `value`.
fn in_span(line: &Value, name: &str, key: &str, value: &str) -> bool {
    line["spans"].as_array().is_some_and(|s| s.iter().any(|s| s["name"] == name && s[key] == value))
}

/// The lines from the first one `starts` picks to the last one `belongs` picks (the work's
/// lines and whatever else was logged meanwhile).
fn window(lines: &[Value], starts: impl Fn(&Value) -> bool, belongs: impl Fn(&Value) -> bool) -> &[Value] {
    let first = lines.iter().position(starts).expect("the work's first line");
    let last = lines.iter().rposition(belongs).expect("the work's last line");
    &lines[first..=last]
}

fn messages(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["message"].as_str().unwrap_or("")).collect()
}

fn write_file(d: &Daemon, vol: &str, name: &str, text: &str) {
    let root = mount(d, vol);
    std::fs::write(root.join(name), text).expect("write");
    unmount(d, vol);
}

#[test]
fn json_logs_carry_the_id_of_the_backup_and_the_restore_in_every_line() {
    let d = Daemon::start_with("", &[("VOLTOOL_LOG_FORMAT", "json")]);
    assert!(d.cli(&["volume", "create", "logs"]).status.success());
    write_file(&d, "logs", "data.txt", "logged\n");
    let o = d.cli(&["backup", "run", "logs", "--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).lines().last().expect("the ID").to_owned();
    let o = d.cli(&["restore", "logs-copy", "--from", &id]);
    assert!(o.status.success(), "{}", stderr(&o));

    let lines = json_lines(&d);
    // The run: from "backup started" to the last line about it (its verification), every
    // line — the volume service's mount, the engine's, the verification's — is in its span.
    let run = window(
        &lines,
        |l| l["message"] == "backup started",
        |l| in_span(l, "backup", "id", &id) || l["backup"] == id.as_str(),
    );
    let said = messages(run);
    for want in ["backup started", "mounted", "unmounted", "backup complete"] {
        assert!(said.contains(&want), "the run logs {want:?}: {said:?}");
    }
    for l in run {
        assert!(
            in_span(l, "backup", "id", &id) && in_span(l, "backup", "volume", "logs"),
            "not in the run's span: {l}"
        );
    }
    // The restore: its lines name the volume and the backup it comes from.
    let restore = window(
        &lines,
        |l| in_span(l, "restore", "volume", "logs-copy"),
        |l| in_span(l, "restore", "volume", "logs-copy"),
    );
    assert!(messages(restore).contains(&"restored"), "{:?}", messages(restore));
    for l in restore {
        assert!(in_span(l, "restore", "from", &id), "not in the restore's span: {l}");
    }
}

/// The daemon's log once it has said it is serving (a line written just after its sockets
/// accept).
fn serving_log(d: &Daemon) -> String {
    let t0 = std::time::Instant::now();
    loop {
        let log = d.log();
        if log.contains("serving") {
            return log;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "no serving line: {log}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn log_format_comes_from_the_config_file_unless_the_environment_says_otherwise() {
    let config = "log-format = \"json\"\n";
    let d = Daemon::start_with(config, &[]);
    serving_log(&d);
    assert!(json_lines(&d).iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("serving"))), "{}", d.log());
    let d = Daemon::start_with(config, &[("VOLTOOL_LOG_FORMAT", "text")]);
    let log = serving_log(&d);
    assert!(log.contains("serving") && !log.trim_start().starts_with('{'), "{log}");
    // Anything else is refused when the daemon starts, naming the key.
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("voltool.toml");
    std::fs::write(&file, "log-format = \"yaml\"\n").expect("write config");
    let (state, plugin, api) = Daemon::paths(dir.path());
    let o = std::process::Command::new(bin())
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .arg("--state-dir")
        .arg(&state)
        .arg("--plugin-socket")
        .arg(&plugin)
        .arg("--api-socket")
        .arg(&api)
        .output()
        .expect("serve");
    assert!(!o.status.success() && stderr(&o).contains("yaml"), "{}", stderr(&o));
}

/// The display column at which each header of `table` starts.
fn column_starts(header: &str) -> Vec<usize> {
    let b = header.as_bytes();
    (0..b.len()).filter(|&i| b[i] != b' ' && (i == 0 || (i >= 3 && &b[i - 3..i] == b"   "))).collect()
}

#[test]
fn backup_ls_keeps_long_ids_in_line_and_says_its_summary_on_stderr() {
    let d = Daemon::start();
    let long = "a-volume-with-a-name-of-forty-characters";
    assert_eq!(long.len(), 40);
    for vol in [long, "db"] {
        assert!(d.cli(&["volume", "create", vol]).status.success());
        write_file(&d, vol, "f.txt", "x");
        let o = d.cli(&["backup", "run", vol]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = d.cli(&["backup", "ls"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "the header and one row per backup, nothing else: {out}");
    let starts = column_starts(lines[0]);
    assert_eq!(starts.len(), 7, "{}", lines[0]);
    // SIZE (the fifth column) is right-aligned: its cells end where its header ends.
    let size_end = starts[4] + "SIZE".len();
    for row in &lines[1..] {
        assert!(row.len() > 60, "a 64-character ID: {row}");
        let b = row.as_bytes();
        for (i, &s) in starts.iter().enumerate().skip(1).filter(|(i, _)| *i != 4) {
            assert!(b[s - 1] == b' ' && b[s] != b' ', "column {i} at {s} out of line:\n{out}");
        }
        assert!(b[size_end - 1] != b' ' && b[size_end] == b' ', "SIZE out of line:\n{out}");
        // Whitespace-split fields still give the ID and the volume first.
        let mut fields = row.split_whitespace();
        let (id, vol) = (fields.next().expect("id"), fields.next().expect("volume"));
        assert!(id.starts_with(&format!("{vol}-")), "{row}");
    }
    let err = stderr(&o);
    assert!(err.starts_with("2 backups") && err.contains("stored"), "the summary on stderr: {err}");
    // `--json` is the catalog's array as before, and says nothing on stderr.
    let j = d.cli(&["backup", "ls", "--json"]);
    assert_eq!(json(&j).as_array().map(Vec::len), Some(2));
    assert!(j.stderr.is_empty(), "{}", stderr(&j));
}
