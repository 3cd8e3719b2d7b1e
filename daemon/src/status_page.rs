//! The status page (`GET /` on `--http`): one server-rendered HTML page, no script — per
//! volume its type, mount state, a usage bar against its limit, the next scheduled backup,
//! the last verification and a chart of its recent backups (stored size as bars, duration as
//! dots, failures in red), then the last events, failures first.
//!
//! Everything shown that came from outside (volume names, reasons: a reason may quote a file
//! name a container chose) is HTML-escaped by [`esc`]; the page loads nothing else (inline
//! CSS and SVG), so a strict `Content-Security-Policy` goes with it.

use std::fmt::Write;

use voltool_api::status::{BackupPoint, CheckPoint, StatusView, VolumeRow};

/// Text made safe for HTML content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `1.5 GiB`-style sizes.
fn size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// `2026-12-07 14:02` from an RFC 3339 time (as given when it does not look like one).
fn when(t: &str) -> String {
    match (t.get(..10), t.get(11..16)) {
        (Some(d), Some(hm)) => format!("{d} {hm}"),
        _ => t.to_owned(),
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd;vertical-align:middle}\
th{background:#f4f4f4}.bar{width:160px;height:10px;background:#eee;border-radius:3px;overflow:hidden}\
.bar>div{height:100%;background:#3a7}.bar>div.warn{background:#e90}.bar>div.full{background:#d33}\
.bad{color:#c22;font-weight:600}.ok{color:#282}.dim{color:#888}.ev td{font-size:13px}\
.ev td:nth-child(-n+4){white-space:nowrap}";

/// The page for `s`.
pub fn render(s: &StatusView) -> String {
    let mut h = String::with_capacity(4096 + s.volumes.len() * 2048);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>voltool on {host}</title>\
         <style>{STYLE}</style></head><body><h1>voltool on {host}</h1>\
         <p class=\"dim\">version {ver} · generated {gen} · volumes measured {meas}</p>",
        host = esc(&s.host),
        ver = esc(&s.version),
        gen = esc(&when(&s.generated_at)),
        meas = s.measured_at.as_deref().map_or_else(|| "not yet".to_owned(), |t| esc(&when(t))),
    );
    let _ = write!(
        h,
        "<h2>Volumes ({})</h2><table id=\"volumes\"><thead><tr><th>volume</th><th>type</th><th>mounts</th>\
         <th>usage</th><th>last backup</th><th>next backup</th><th>last verification</th><th>last restore test</th><th>recent backups</th></tr></thead><tbody>",
        s.volumes.len()
    );
    for v in &s.volumes {
        volume_row(&mut h, v);
    }
    h.push_str("</tbody></table>");
    let _ = write!(
        h,
        "<h2>Events</h2><table id=\"events\" class=\"ev\"><thead><tr><th>when</th><th>event</th><th>volume</th><th>backup</th><th>reason</th></tr></thead><tbody>"
    );
    if s.events.is_empty() {
        h.push_str("<tr><td colspan=\"5\" class=\"dim\">none since the daemon started</td></tr>");
    }
    for e in &s.events {
        let class = if e.kind == "backup-succeeded" { "ok" } else { "bad" };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&when(&e.at)),
            esc(&e.kind),
            esc(e.volume.as_deref().unwrap_or("")),
            esc(e.backup_id.as_deref().unwrap_or("")),
            esc(e.reason.as_deref().unwrap_or("")),
        );
    }
    h.push_str("</tbody></table></body></html>\n");
    h
}

fn volume_row(h: &mut String, v: &VolumeRow) {
    let name = esc(&v.name);
    let server = match v.server_up {
        Some(false) => " <span class=\"bad\">server down</span>",
        _ => "",
    };
    let _ = write!(
        h,
        "<tr data-volume=\"{name}\"><td><b>{name}</b>{server}</td><td>{}</td><td>{}</td><td>{}</td>",
        esc(&v.kind),
        if v.mounted { format!("{} (mounted)", v.mounts) } else { v.mounts.to_string() },
        usage(v),
    );
    match &v.last_backup {
        Some(b) => {
            let class = match b.status.as_str() {
                "complete" => "ok",
                "failed" => "bad",
                _ => "dim",
            };
            let _ = write!(
                h,
                "<td class=\"last-backup\"><span class=\"{class}\">{}</span> {}<br><span class=\"dim\">{}</span></td>",
                esc(&b.status),
                esc(&when(&b.at)),
                esc(&b.id)
            );
        }
        None => h.push_str("<td class=\"last-backup dim\">none</td>"),
    }
    let _ = write!(h, "<td>{}</td>", v.next_backup.as_deref().map_or_else(|| "—".to_owned(), |t| esc(&when(t))));
    check_cell(h, "last-verify", v.last_verify.as_ref());
    check_cell(h, "last-restore-test", v.last_restore_test.as_ref());
    let _ = write!(h, "<td>{}</td></tr>", chart(&v.history));
}

/// A verification's or restore test's cell: ok or failed (the reason on hover), and when.
fn check_cell(h: &mut String, class: &str, c: Option<&CheckPoint>) {
    match c {
        Some(c) if c.ok => {
            let _ = write!(h, "<td class=\"{class}\"><span class=\"ok\">ok</span> {}</td>", esc(&when(&c.at)));
        }
        Some(c) => {
            let _ = write!(
                h,
                "<td class=\"{class}\"><span class=\"bad\" title=\"{}\">failed</span> {}</td>",
                esc(c.reason.as_deref().unwrap_or("")),
                esc(&when(&c.at))
            );
        }
        None => {
            let _ = write!(h, "<td class=\"{class} dim\">—</td>");
        }
    }
}

fn usage(v: &VolumeRow) -> String {
    match (v.used_bytes, v.size_limit_bytes) {
        (Some(used), Some(limit)) if limit > 0 => {
            let pct = (used as f64 / limit as f64 * 100.0).min(100.0);
            let class = if pct >= 95.0 {
                "full"
            } else if pct >= 80.0 {
                "warn"
            } else {
                ""
            };
            format!(
                "<div class=\"bar\" title=\"{pct:.0}%\"><div class=\"{class}\" style=\"width:{pct:.1}%\"></div></div>{} of {}",
                size(used),
                size(limit)
            )
        }
        (Some(used), _) => format!("{} (no limit)", size(used)),
        (None, Some(limit)) => format!("? of {}", size(limit)),
        (None, None) => "<span class=\"dim\">not measured</span>".to_owned(),
    }
}

/// An inline SVG: one bar per backup (its stored size, scaled to the largest), a dot for its
/// duration (scaled to the longest), a red bar for a failed one.
fn chart(points: &[BackupPoint]) -> String {
    if points.is_empty() {
        return "<span class=\"dim\">no backups</span>".to_owned();
    }
    let (w, hgt, step) = (200.0, 36.0, 200.0 / voltool_api::status::HISTORY as f64);
    let max_size = points.iter().filter_map(|p| p.stored_bytes).max().unwrap_or(1).max(1) as f64;
    let max_ms = points.iter().filter_map(|p| p.duration_ms).max().unwrap_or(1).max(1) as f64;
    let mut svg = format!(
        "<svg class=\"chart\" width=\"{w}\" height=\"{hgt}\" viewBox=\"0 0 {w} {hgt}\" role=\"img\" aria-label=\"recent backups\">"
    );
    for (i, p) in points.iter().enumerate() {
        let x = i as f64 * step;
        let failed = p.status == "failed";
        let bar = if failed { hgt } else { (p.stored_bytes.unwrap_or(0) as f64 / max_size * (hgt - 2.0)).max(1.0) };
        let title = format!(
            "{} {} {}{}{}",
            when(&p.at),
            p.status,
            p.stored_bytes.map(size).unwrap_or_default(),
            p.duration_ms.map(|ms| format!(" in {:.1}s", ms as f64 / 1000.0)).unwrap_or_default(),
            p.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default(),
        );
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar:.1}\" fill=\"{}\"><title>{}</title></rect>",
            x + 1.0,
            hgt - bar,
            step - 2.0,
            if failed { "#d33" } else { "#7ab" },
            esc(&title)
        );
        if let Some(ms) = p.duration_ms.filter(|_| !failed) {
            let y = hgt - 2.0 - ms as f64 / max_ms * (hgt - 4.0);
            let _ = write!(svg, "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"2\" fill=\"#333\"/>", x + step / 2.0);
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped() {
        assert_eq!(esc("<script>alert('x')</script>&\""), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;");
        assert_eq!(esc("a\u{1b}[31mb"), "a\u{fffd}[31mb");
        let s = StatusView {
            host: "h".into(),
            version: "0".into(),
            generated_at: "2026-12-07T14:02:03Z".into(),
            measured_at: None,
            volumes: vec![VolumeRow {
                name: "db".into(),
                kind: "local".into(),
                mounted: true,
                mounts: 1,
                size_limit_bytes: Some(100),
                used_bytes: Some(96),
                server_up: None,
                next_backup: None,
                last_backup: None,
                last_verify: Some(CheckPoint {
                    backup: "db-0".into(),
                    at: "2026-12-06T10:00:00Z".into(),
                    ok: true,
                    reason: None,
                }),
                last_restore_test: Some(CheckPoint {
                    backup: "db-0".into(),
                    at: "2026-12-06T11:00:00Z".into(),
                    ok: false,
                    reason: Some("the check command exited 1: <b>".into()),
                }),
                history: vec![BackupPoint {
                    id: "db-1".into(),
                    at: "2026-12-07T14:00:00Z".into(),
                    status: "failed".into(),
                    stored_bytes: None,
                    duration_ms: Some(5),
                    reason: Some("file <img src=x onerror=alert(1)> unreadable".into()),
                }],
            }],
            events: vec![],
        };
        let page = render(&s);
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("class=\"full\""), "{page}");
        assert!(page.contains("2026-12-07 14:02"), "{page}");
        // The verification and the restore test each in their own cell.
        assert!(page.contains("class=\"last-verify\"><span class=\"ok\">ok</span> 2026-12-06 10:00"), "{page}");
        assert!(page.contains("class=\"last-restore-test\"><span class=\"bad\" title=\"the check command exited 1: &lt;b&gt;\">failed</span> 2026-12-06 11:00"), "{page}");
    }
}
