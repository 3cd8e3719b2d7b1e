//! Sizes as users write them (`512M`, `1.5GiB`, `4096`) and as voltool shows them
//! (`16 MiB`). Binary units only: `size=1G` is 1024³ bytes, as for Docker's tmpfs `size=`.
//! The largest accepted size is `i64::MAX` bytes (8 EiB), what the kernel takes for a file.

/// Why a size was refused; the message is shown after `invalid value ... for option size:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("expected a number with an optional unit, e.g. 512M, 10G, 1.5GiB")]
    Syntax,
    #[error("unknown unit {0:?}; use K, M, G, T or P (binary units)")]
    Unit(String),
    /// More digits than any size has (20 before the point, 12 after).
    #[error("number too large")]
    Digits,
    #[error("too many decimals")]
    Decimals,
    #[error("the size must be greater than zero")]
    Zero,
    /// Over `i64::MAX` bytes.
    #[error("the size is too large")]
    TooLarge,
}

/// Parses a size such as `512M`, `10G`, `1.5GiB`, `16m` or `4096` into bytes. All units are
/// binary (K = 1024); `B`, `iB` suffixes and case are optional.
///
/// # Errors
/// [`SizeError`] saying what is wrong.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1 {
        return Err(SizeError::Syntax);
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return Err(SizeError::Unit(unit.to_owned())),
    };
    let bytes = if let Some((int, frac)) = num.split_once('.') {
        if int.len() > 20 || frac.len() > 12 {
            return Err(SizeError::Digits);
        }
        let int: u128 = int.parse().map_err(|_| SizeError::Digits)?;
        let frac_v: u128 = frac.parse().map_err(|_| SizeError::Digits)?;
        let scale = 10u128.checked_pow(frac.len() as u32).ok_or(SizeError::Decimals)?;
        (int << shift) + ((frac_v << shift) / scale)
    } else {
        if num.len() > 20 {
            return Err(SizeError::Digits);
        }
        let v: u128 = num.parse().map_err(|_| SizeError::Digits)?;
        v << shift
    };
    if bytes == 0 {
        return Err(SizeError::Zero);
    }
    u64::try_from(bytes).ok().filter(|b| *b <= i64::MAX as u64).ok_or(SizeError::TooLarge)
}

/// Formats bytes in binary units, e.g. `16 MiB`, `1.5 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.2} {}", UNITS[i]).replace(".00 ", " ")
    }
}
