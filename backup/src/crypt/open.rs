//! Decrypting: [`open`] turns a stored age object back into its plaintext stream;
//! [`StoredHash`] hashes the stored bytes on their way in.

use std::io::{self, BufReader, Read};
use std::sync::{Arc, Mutex};

use age::DecryptError;
use sha2::{Digest, Sha256};

use super::{AGE_MAGIC, CryptError, Identities, StoredObject};

/// Reads through the age header of `input` (the object `object`) with `ids` and returns the
/// plaintext stream. Reading it fails, naming the object, where a chunk does not
/// authenticate ([`io::ErrorKind::InvalidData`]: a changed byte) or the stream ends before
/// its last chunk ([`io::ErrorKind::UnexpectedEof`]: a truncated object).
///
/// # Errors
/// [`CryptError::NoIdentities`] / [`CryptError::NoMatchingIdentity`] (listing the identities
/// tried by name), [`CryptError::NotAge`], [`CryptError::Header`], [`CryptError::Read`].
pub fn open<'a, R: Read + Send + 'a>(
    input: R,
    ids: &Identities,
    object: &str,
) -> Result<Box<dyn Read + Send + 'a>, CryptError> {
    let o = || object.to_owned();
    let d =
        age::Decryptor::new_buffered(BufReader::with_capacity(1 << 16, input)).map_err(|e| header_error(e, object))?;
    if ids.is_empty() {
        return Err(ids.none_match(object));
    }
    let stream = d.decrypt(ids.iter()).map_err(|e| match e {
        DecryptError::NoMatchingKeys => ids.none_match(object),
        DecryptError::Io(source) => CryptError::Read { object: o(), source },
        _ => CryptError::Header { object: o() },
    })?;
    Ok(Box::new(Plaintext { stream, object: o() }))
}

/// What reading the age header of `object` failed with.
pub(super) fn header_error(e: DecryptError, object: &str) -> CryptError {
    let o = || object.to_owned();
    match e {
        DecryptError::Io(source) => CryptError::Read { object: o(), source },
        DecryptError::UnknownFormat => CryptError::NotAge { object: o(), reason: "an unknown age version" },
        _ => CryptError::NotAge { object: o(), reason: "no valid age header" },
    }
}

/// `input` as it was, or decrypted with `ids` when it starts with an age header (a stream
/// whose kind is not known beforehand: an import, a manifest the CLI sends). `object` names
/// it in errors.
///
/// # Errors
/// As [`open`]; [`CryptError::Read`] when its first bytes cannot be read.
pub fn open_if_sealed<'a, R: Read + Send + 'a>(
    mut input: R,
    ids: impl FnOnce() -> Identities,
    object: &str,
) -> Result<Box<dyn Read + Send + 'a>, CryptError> {
    let mut head = Vec::with_capacity(AGE_MAGIC.len());
    (&mut input)
        .take(AGE_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(|source| CryptError::Read { object: object.to_owned(), source })?;
    let sealed = head == AGE_MAGIC;
    let whole = io::Cursor::new(head).chain(input);
    if sealed { open(whole, &ids(), object) } else { Ok(Box::new(whole)) }
}

/// [`open_if_sealed`] decided at the first read rather than now: for a stream whose first
/// bytes may take a while to come (an import on stdin), so that what comes before reading it
/// (a restore's staging directory) is not held up. An error of [`open_if_sealed`] is the first
/// read's ([`io::ErrorKind::InvalidData`] for a wrong key or a bad header, with its message).
pub fn open_if_sealed_lazily<'a, R, F>(input: R, ids: F, object: &str) -> Box<dyn Read + Send + 'a>
where
    R: Read + Send + 'a,
    F: FnOnce() -> Identities + Send + 'a,
{
    let object = object.to_owned();
    Box::new(Lazy::Pending(Box::new(move || open_if_sealed(input, ids, &object))))
}

type Opener<'a> = Box<dyn FnOnce() -> Result<Box<dyn Read + Send + 'a>, CryptError> + Send + 'a>;

enum Lazy<'a> {
    Pending(Opener<'a>),
    Open(Box<dyn Read + Send + 'a>),
    Failed,
}

impl Read for Lazy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if matches!(self, Lazy::Pending(_)) {
            let Lazy::Pending(open) = std::mem::replace(self, Lazy::Failed) else { unreachable!() };
            let opened = open().map_err(|e| match e {
                CryptError::Read { source, .. } => source,
                e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            })?;
            *self = Lazy::Open(opened);
        }
        match self {
            Lazy::Open(r) => r.read(buf),
            _ => Err(io::Error::other("the archive could not be opened")),
        }
    }
}

/// The plaintext of an age stream, its errors naming the object.
pub(super) struct Plaintext<R: Read> {
    pub(super) stream: age::stream::StreamReader<R>,
    pub(super) object: String,
}

impl<R: Read> Plaintext<R> {
    /// A read error of the stream as a message naming the object and what is wrong with it.
    pub(super) fn explain(&self, e: io::Error) -> io::Error {
        let what = match e.kind() {
            io::ErrorKind::InvalidData => "the encrypted object is damaged: a chunk does not authenticate",
            io::ErrorKind::UnexpectedEof => "the encrypted object is truncated: it ends before its last chunk",
            _ => return io::Error::new(e.kind(), format!("reading {}: {e}", self.object)),
        };
        io::Error::new(e.kind(), format!("{}: {what}", self.object))
    }
}

impl<R: Read> Read for Plaintext<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf).map_err(|e| self.explain(e))
    }
}

/// The size and sha256 of the bytes read through [`StoredHash::reader`] (an object as
/// stored, under the decryption). Clones share the count.
#[derive(Clone, Default)]
pub struct StoredHash(Arc<Mutex<(Sha256, u64)>>);

impl std::fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredHash").finish_non_exhaustive()
    }
}

impl StoredHash {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `inner`, hashing and counting every byte read from it into this.
    pub fn reader<R: Read>(&self, inner: R) -> impl Read + use<R> {
        HashReader { inner, into: self.clone() }
    }

    /// What has been read so far.
    #[must_use]
    pub fn result(&self) -> StoredObject {
        let g = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        StoredObject { size: g.1, sha256: hex::encode(g.0.clone().finalize()) }
    }
}

struct HashReader<R> {
    inner: R,
    into: StoredHash,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut g = self.into.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        g.0.update(&buf[..n]);
        g.1 += n as u64;
        Ok(n)
    }
}
