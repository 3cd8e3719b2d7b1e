//! Printing helpers shared by the commands.

use std::io::Write;

use anyhow::Result;

/// Prints pretty JSON followed by a newline. A write error stays an `io::Error` (not a
/// `serde_json::Error` around one), so `main` sees a closed stdout as the broken pipe it is.
pub fn json<T: serde::Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// Prints rows as left-aligned columns under a header, each as wide as its widest cell (in
/// characters), whatever the cells hold: control characters (a name on a target is anybody's
/// input) are shown escaped, never sent to the terminal.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for line in table_lines(header, rows) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The lines [`table`] prints.
fn table_lines(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let cells: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| printable(h)).collect())
        .chain(rows.iter().map(|r| r.iter().map(|c| printable(c)).collect()))
        .collect();
    let mut widths: Vec<usize> = vec![0; header.len()];
    for r in &cells {
        for (i, c) in r.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    cells
        .iter()
        .map(|r| {
            let last = r.len().saturating_sub(1);
            r.iter()
                .enumerate()
                .map(|(i, c)| if i == last { c.clone() } else { format!("{c:<w$}", w = widths[i]) })
                .collect::<Vec<_>>()
                .join("   ")
        })
        .collect()
}

/// `s` with control characters escaped (`\u{1b}`), safe to print on a terminal.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_cells_hold() {
        let rows = vec![
            vec!["a-very-long-backup-id-20260101T000000Z-abcdef".to_string(), "ünï".into(), "x".into()],
            vec!["short".into(), "v".into(), "evil\u{1b}[2J".into()],
        ];
        let lines = table_lines(&["ID", "VOLUME", "STATE"], &rows);
        // Columns start after the widest cell before them and three spaces.
        let (second, third) = (rows[0][0].chars().count() + 3, rows[0][0].chars().count() + 3 + "VOLUME".len() + 3);
        let at = |l: &str, i: usize| l.chars().nth(i).expect("column");
        assert_eq!([at(&lines[0], second), at(&lines[1], second), at(&lines[2], second)], ['V', 'ü', 'v']);
        assert_eq!([at(&lines[0], third), at(&lines[1], third), at(&lines[2], third)], ['S', 'x', 'e']);
        assert!(lines[2].ends_with("evil\\u{1b}[2J"), "{}", lines[2]);
        assert!(!lines.concat().contains('\u{1b}'));
    }
}
