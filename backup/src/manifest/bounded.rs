//! Reading an untrusted manifest within limits: [`Bounded`] passes the bytes to the JSON
//! parser and stops with an error once the document is larger than allowed or one string in
//! it grows past [`super::MAX_MANIFEST_STRING`], recording which limit was hit, so the parser
//! never gathers more than the limits allow.

use super::MAX_MANIFEST_STRING;

/// A reader that fails (`InvalidData`) once more than `left` bytes were asked of it, or a JSON
/// string grows past [`MAX_MANIFEST_STRING`], and says which in `over`.
pub(super) struct Bounded<R> {
    inner: R,
    left: u64,
    pub(super) over: Option<Over>,
    /// Bytes passed so far, and where the lexer is: in a string (its length so far), after a
    /// backslash in one.
    pos: u64,
    string: Option<u64>,
    escaped: bool,
}

/// Which limit a manifest went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Over {
    Size,
    /// A string longer than the limit, starting near this byte.
    String(u64),
}

impl<R: std::io::Read> Bounded<R> {
    pub(super) fn new(inner: R, left: u64) -> Self {
        Self { inner, left, over: None, pos: 0, string: None, escaped: false }
    }

    /// Records the first limit gone over (serde_json may read again after an error).
    fn fail(&mut self, why: Over) -> std::io::Error {
        self.over.get_or_insert(why);
        std::io::Error::new(std::io::ErrorKind::InvalidData, "over a manifest limit")
    }

    /// Follows strings through `bytes`; `Err` with the string's start once one is too long.
    fn lex(&mut self, bytes: &[u8]) -> Result<(), u64> {
        for (i, &b) in bytes.iter().enumerate() {
            let Some(len) = self.string.as_mut() else {
                if b == b'"' {
                    self.string = Some(0);
                }
                continue;
            };
            if self.escaped {
                self.escaped = false;
            } else if b == b'"' {
                self.string = None;
                continue;
            } else if b == b'\\' {
                self.escaped = true;
            }
            *len += 1;
            if *len > MAX_MANIFEST_STRING {
                return Err((self.pos + i as u64).saturating_sub(*len));
            }
        }
        self.pos += bytes.len() as u64;
        Ok(())
    }
}

impl<R: std::io::Read> std::io::Read for Bounded<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if let Some(why) = self.over {
            return Err(self.fail(why));
        }
        if self.left == 0 {
            // One byte more than allowed means the document is over the limit.
            if self.inner.read(&mut [0u8])? == 0 {
                return Ok(0);
            }
            return Err(self.fail(Over::Size));
        }
        let k = out.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut out[..k])?;
        self.left -= n as u64;
        if let Err(at) = self.lex(&out[..n]) {
            return Err(self.fail(Over::String(at)));
        }
        Ok(n)
    }
}
