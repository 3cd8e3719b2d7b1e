//! The one table layout every listing of the CLI prints (`volume ls`, `secret ls`,
//! `backup ls [--target]`, `backup prune`, `backup schedule ls`).
//!
//! Design: each column is as wide as its widest cell *on the terminal* (the cell's display
//! width, [`unicode_width`]: a CJK character or an emoji takes two cells, a combining mark
//! none), so a 60-character backup ID or a name in another script never pushes the columns
//! after it out of line. Columns are separated by three spaces (scripts and tests that split
//! on a run of spaces keep working; a cell may hold single spaces, e.g. `2.0 KiB`). The last
//! column is not padded, so no line ends in spaces. Control characters in a cell (a name on a
//! target is anybody's input) are shown escaped ([`printable`]), never sent to the terminal.
//!
//! Only rows go to stdout: what a command says about them (counts, totals, notes) goes to
//! stderr after the table, so `voltool backup ls | awk ...` reads nothing but the table.
//!
//! Limitations: widths are those of [`unicode_width`]'s tables (East Asian Wide = 2,
//! ambiguous-width characters = 1), which is what most terminals do; a terminal that draws
//! ambiguous characters two cells wide misaligns the rows that hold them.

use std::io::Write;

use unicode_width::UnicodeWidthStr;

use crate::output::printable;

/// The gap between two columns.
const GAP: &str = "   ";

/// Where a cell sits in its column: text to the left, numbers and sizes to the right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A column: its header and its alignment.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    pub align: Align,
}

/// A left-aligned column (text: IDs, names, states, times).
pub const fn left(title: &'static str) -> Column {
    Column { title, align: Align::Left }
}

/// A right-aligned column (numbers and sizes, so their units line up).
pub const fn right(title: &'static str) -> Column {
    Column { title, align: Align::Right }
}

/// Prints the header and `rows` on stdout (the header alone for no rows).
///
/// # Errors
/// A write error of stdout (a closed pipe is one: `main` treats it as success).
pub fn print(columns: &[Column], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for line in lines(columns, rows) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The lines [`print`] prints. A row with fewer cells than columns is padded with empty
/// cells; cells past the last column are shown without a header.
pub fn lines(columns: &[Column], rows: &[Vec<String>]) -> Vec<String> {
    let header = columns.iter().map(|c| c.title.to_owned()).collect();
    let cells: Vec<Vec<String>> =
        std::iter::once(header).chain(rows.iter().map(|r| r.iter().map(|c| printable(c)).collect())).collect();
    let count = cells.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; count];
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.width());
        }
    }
    let align = |i: usize| columns.get(i).map_or(Align::Left, |c| c.align);
    cells
        .iter()
        .map(|row| {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                let pad = " ".repeat(w - cell.width());
                if i > 0 {
                    line.push_str(GAP);
                }
                match align(i) {
                    Align::Left => line.extend([cell, &pad]),
                    Align::Right => line.extend([&pad, cell]),
                }
            }
            line.truncate(line.trim_end().len());
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The display column at which each column of `line` starts, found from the known cells.
    fn starts(line: &str, cells: &[&str]) -> Vec<usize> {
        let mut at = 0;
        cells
            .iter()
            .map(|c| {
                let byte = at + line[at..].find(c).unwrap_or_else(|| panic!("{c:?} in {line:?}"));
                at = byte + c.len();
                line[..byte].width()
            })
            .collect()
    }

    /// The test `output::table` had, moved here with it.
    #[test]
    fn columns_line_up_whatever_the_cells_hold() {
        let rows = vec![
            vec!["a-very-long-backup-id-20260101T000000Z-abcdef".to_string(), "ünï".into(), "x".into()],
            vec!["short".into(), "v".into(), "evil\u{1b}[2J".into()],
        ];
        let lines = lines(&[left("ID"), left("VOLUME"), left("STATE")], &rows);
        // Columns start after the widest cell before them and three spaces.
        let (second, third) = (rows[0][0].chars().count() + 3, rows[0][0].chars().count() + 3 + "VOLUME".len() + 3);
        let at = |l: &str, i: usize| l.chars().nth(i).expect("column");
        assert_eq!([at(&lines[0], second), at(&lines[1], second), at(&lines[2], second)], ['V', 'ü', 'v']);
        assert_eq!([at(&lines[0], third), at(&lines[1], third), at(&lines[2], third)], ['S', 'x', 'e']);
        assert!(lines[2].ends_with("evil\\u{1b}[2J"), "{}", lines[2]);
        assert!(!lines.concat().contains('\u{1b}'));
    }

    #[test]
    fn a_60_character_id_keeps_the_later_columns_aligned() {
        let long = format!("db-{}", "x".repeat(57));
        assert_eq!(long.len(), 60);
        let rows = vec![
            vec![long.clone(), "db".into(), "complete".into()],
            vec!["db-1".into(), "a-much-longer-volume".into(), "failed".into()],
        ];
        let l = lines(&[left("ID"), left("VOLUME"), left("STATUS")], &rows);
        let want = vec![0, 63, 63 + "a-much-longer-volume".len() + 3];
        assert_eq!(starts(&l[0], &["ID", "VOLUME", "STATUS"]), want);
        assert_eq!(starts(&l[1], &[&long, "db", "complete"]), want);
        assert_eq!(starts(&l[2], &["db-1", "a-much-longer-volume", "failed"]), want);
        assert!(l.iter().all(|l| !l.ends_with(' ')), "{l:?}");
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(lines(&[left("NAME"), right("SIZE"), left("CREATED (UTC)")], &[]), ["NAME   SIZE   CREATED (UTC)"]);
        assert!(lines(&[], &[]).iter().all(String::is_empty));
    }

    #[test]
    fn wide_characters_count_as_two_cells() {
        let rows = vec![
            vec!["データ".into(), "1.0 KiB".into(), "x".into()],
            vec!["ünï".into(), "12.5 MiB".into(), "y".into()],
            vec!["🦀🦀".into(), "100 B".into(), "z".into()],
        ];
        let l = lines(&[left("NAME"), right("SIZE"), left("NOTE")], &rows);
        // "データ" is 3 characters but 6 cells wide: the widest name.
        assert_eq!(
            l,
            ["NAME         SIZE   NOTE", "データ    1.0 KiB   x", "ünï      12.5 MiB   y", "🦀🦀        100 B   z",]
        );
    }

    #[test]
    fn control_characters_are_escaped_and_short_rows_padded() {
        let rows = vec![vec!["evil\u{1b}[2J".into(), "v".into()], vec!["ok".into()]];
        let l = lines(&[left("ID"), left("VOLUME")], &rows);
        assert!(!l.concat().contains('\u{1b}'), "{l:?}");
        assert_eq!(l[1], "evil\\u{1b}[2J   v");
        assert_eq!(l[2], "ok");
    }
}
