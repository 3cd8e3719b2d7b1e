//! Printing helpers shared by the commands (tables: [`crate::table`]).

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

/// `s` with control characters escaped (`\u{1b}`), safe to print on a terminal.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}
