//! Header fields and pax records: numbers, names, times, and the records of an `x` header.

use super::limits::{At, Limit, Limits, TarError, check};
use super::{BLOCK, Pending};

/// Parses a pax time (`[-]SECONDS[.FRACTION]`) into seconds and nanoseconds (floor
/// semantics: `-1.25` is `(-2, 750_000_000)`).
#[must_use]
pub fn parse_pax_time(s: &str) -> Option<(i64, u32)> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    let whole: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nsec: u32 = digits.parse().ok()?;
    Some(match (neg, nsec) {
        (false, _) => (whole, nsec),
        (true, 0) => (-whole, 0),
        (true, _) => (-whole - 1, 1_000_000_000 - nsec),
    })
}

/// One pax record, `LEN KEY=VALUE\n`, where LEN counts the whole record, its own digits
/// included: what [`super::TarReader`] reads from an `x` header (tests and tools build them).
#[must_use]
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len += 1;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

pub(super) fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// The bytes of a NUL-terminated header field.
pub(super) fn field(f: &[u8]) -> &[u8] {
    f.iter().position(|&c| c == 0).map_or(f, |i| &f[..i])
}

pub(super) fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// A numeric header field: octal digits (surrounded by spaces or NULs), or GNU base-256 (the
/// first byte's high bit set). `None` when it does not parse.
pub(super) fn num(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|&c| c & 0x80 != 0) {
        // Base-256, big-endian; a negative number (0xff first) does not fit.
        if f[0] == 0xff {
            return None;
        }
        let mut v: u64 = u64::from(f[0] & 0x7f);
        for &c in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(c))?;
        }
        return Some(v);
    }
    // An all-blank field has no number (as the `tar` crate reads it).
    let mut v: Option<u64> = None;
    for &c in f.iter().skip_while(|&&c| c == b' ' || c == 0) {
        match c {
            b'0'..=b'7' => v = Some(v.unwrap_or(0).checked_mul(8)?.checked_add(u64::from(c - b'0'))?),
            b' ' | 0 => break,
            _ => return None,
        }
    }
    v
}

/// Whether the header's checksum is right: the sum of its bytes with the checksum field taken
/// as spaces.
pub(super) fn sum_ok(b: &[u8; BLOCK]) -> bool {
    let Some(want) = num(&b[148..156]) else { return false };
    // All 512 bytes (one vectorisable loop), then the checksum field's own bytes swapped for
    // spaces.
    let all: u32 = b.iter().map(|&c| u32::from(c)).sum();
    let field: u32 = b[148..156].iter().map(|&c| u32::from(c)).sum();
    u64::from(all - field + 8 * u32::from(b' ')) == want
}

/// Applies pax records (`LEN KEY=VALUE\n`, `LEN` counting the whole record) to `p`. A
/// malformed record ends the parsing; the ones before it count. `offset` is the header's, for
/// errors before the entry has a name.
///
/// # Errors
/// [`TarError::TooLarge`] when the records, a path or the xattrs go over `lim`.
pub(super) fn apply_pax(mut data: &[u8], p: &mut Pending, lim: &Limits, offset: u64) -> Result<(), TarError> {
    while !data.is_empty() {
        let Some(sp) = data.iter().take(20).position(|&c| c == b' ') else { return Ok(()) };
        let Some(len) = std::str::from_utf8(&data[..sp]).ok().and_then(|s| s.parse::<usize>().ok()) else {
            return Ok(());
        };
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Ok(());
        }
        let rec = &data[sp + 1..len - 1];
        data = &data[len..];
        p.records += 1;
        check(|| At::of(p.path.as_deref(), offset), Limit::PaxRecords, p.records, lim.pax_records.into())?;
        let Some(eq) = rec.iter().position(|&c| c == b'=') else { continue };
        let (key, value) = (&rec[..eq], &rec[eq + 1..]);
        let text = || std::str::from_utf8(value).ok();
        match key {
            b"path" | b"linkpath" => {
                check(|| At::of(Some(value), offset), Limit::Path, value.len() as u64, lim.path as u64)?;
                let slot = if key == b"path" { &mut p.path } else { &mut p.link };
                *slot = Some(value.to_vec());
            }
            b"size" => p.size = text().and_then(|v| v.parse().ok()),
            b"uid" => p.uid = text().and_then(|v| v.parse().ok()),
            b"gid" => p.gid = text().and_then(|v| v.parse().ok()),
            // The first record counts, even when it does not parse.
            b"mtime" if p.mtime.is_none() => p.mtime = Some(text().and_then(parse_pax_time)),
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.")
                    && let Ok(name) = std::str::from_utf8(name)
                {
                    add_xattr(p, name, value, lim, offset)?;
                }
            }
        }
    }
    Ok(())
}

/// Keeps one xattr for the entry, within `lim`.
fn add_xattr(p: &mut Pending, name: &str, value: &[u8], lim: &Limits, offset: u64) -> Result<(), TarError> {
    let at = || At::of(p.path.as_deref(), offset);
    check(at, Limit::Xattrs, p.xattrs.len() as u64 + 1, lim.xattrs.into())?;
    check(at, Limit::XattrName, name.len() as u64, lim.xattr_name as u64)?;
    check(at, Limit::XattrValue, value.len() as u64, lim.xattr_value as u64)?;
    let total = p.xattr_bytes + name.len() + value.len();
    check(at, Limit::XattrTotal, total as u64, lim.xattr_total as u64)?;
    p.xattr_bytes = total;
    p.xattrs.push((name.to_owned(), value.to_vec()));
    Ok(())
}
