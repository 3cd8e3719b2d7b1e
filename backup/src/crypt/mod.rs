//! Encrypted backups (SPEC §8): the archive and the manifest as [age](https://age-encryption.org/v1)
//! files, to X25519 (`age1...`) and `ssh-ed25519` recipients, so that stock `age -d -i KEY`
//! decrypts them.
//!
//! ## Overview
//! - [`Recipients`] parses public keys (a volume's `backup-encrypt=`, a target's `encrypt-to`),
//!   naming the one that is not a key.
//! - [`SealedWriter`] is an [`crate::ObjectWriter`] over the target's writer: the bytes written
//!   to it are encrypted on a thread of its own and handed to the target's writer, hashing the
//!   stored (encrypted) bytes on the way; [`SealedWriter::finish`] ends the age stream, commits
//!   the object and returns its size and sha256 ([`StoredObject`], what `ID.tar.zst.age.sha256`
//!   holds, so `sha256sum -c` checks it without a key). [`Recipients::seal`] encrypts any other
//!   writer inline (the manifest, which is small next to the archive).
//! - [`Identities`] holds private keys (age identity files, unencrypted OpenSSH ed25519 keys),
//!   each known by the name of the secret it came from; [`open`] decrypts a stream with them,
//!   [`StoredHash`] hashes the stored bytes under it; [`open_range`] decrypts a part of an
//!   object, reading only the chunks that hold it ([`RangedObject`]).
//!
//! ## Design
//! - Constant memory: age's STREAM encrypts 64 KiB chunks; the writer keeps at most
//!   [`BLOCKS`] blocks of [`BLOCK`] bytes in flight between the archiver and its thread, the
//!   reader one chunk. Nothing is spooled.
//! - Why a thread: ChaCha20-Poly1305 plus a second sha256 (of the stored bytes) on the
//!   archiver's compressor thread would lengthen the one stage every byte passes through;
//!   on its own thread it runs beside zstd's workers (docs/BENCHMARKS.md has the cost).
//! - No key material in any message: errors name recipients (public keys, shortened, and a
//!   private key given by mistake is never echoed) and identities by their secret's name.
//! - Integrity: age authenticates every chunk and marks the last one, so a flipped byte or a
//!   truncated object fails to decrypt ([`std::io::ErrorKind::InvalidData`] /
//!   [`std::io::ErrorKind::UnexpectedEof`], naming the object); the manifest's
//!   `archive_sha256` stays the sha256 of the plaintext zstd stream, which restores and
//!   verification check as before.
//!
//! ## Limitations
//! - Object names and sizes are visible on the target (SECURITY.md says what is protected).
//! - Passphrase-protected SSH keys and ssh-rsa keys are refused (a daemon cannot type a
//!   passphrase; voltool encrypts to age and ed25519 keys only).

use std::fmt;

use age::ssh::Identity as SshIdentity;
use age::x25519;

mod open;
mod ranged;
mod seal;
#[cfg(test)]
mod tests;

pub use open::{StoredHash, open, open_if_sealed, open_if_sealed_lazily};
pub use ranged::{RangedObject, open_range, window_for};
pub use seal::{BLOCK, BLOCKS, SealedWriter, Sealer, StoredObject};

/// The first bytes of every age file (the version line of its header).
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// What to tell a user who has no identity for an encrypted object.
const HOW_TO_ADD: &str = "add the private key with `voltool secret add NAME` (an AGE-SECRET-KEY-1... line or an unencrypted OpenSSH ed25519 private key) and name it in the config file: [backup] identities = [\"NAME\"]";

/// Errors of encryption and decryption. None carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// A recipient that is not a usable public key (`recipient` is shortened, and never a
    /// private key's text).
    #[error("recipient {recipient:?}: {reason}")]
    Recipient { recipient: String, reason: &'static str },
    /// An empty recipient list.
    #[error("no recipients: give at least one age1... or ssh-ed25519 public key")]
    NoRecipients,
    /// A secret that is not a usable identity.
    #[error("secret {name} is not a usable age identity: {reason}")]
    Identity { name: String, reason: &'static str },
    /// The age encryptor refused the recipients.
    #[error("encrypting {object}: {reason}")]
    Encrypt { object: String, reason: String },
    /// An encrypted object, and no identity configured at all.
    #[error("{object} is encrypted and no identity is configured: {HOW_TO_ADD}")]
    NoIdentities { object: String },
    /// No configured identity matches the object's recipients.
    #[error(
        "{object}: none of the configured identities can decrypt it (tried: {}{}); {HOW_TO_ADD}",
        names_or_none(tried),
        unusable_note(unusable)
    )]
    NoMatchingIdentity { object: String, tried: Vec<String>, unusable: Vec<String> },
    /// The object does not start with an age header.
    #[error("{object} is not an age-encrypted object: {reason}")]
    NotAge { object: String, reason: &'static str },
    /// The header is an age header, but damaged (its MAC does not match the file key).
    #[error("{object}: the age header is damaged (its MAC does not match)")]
    Header { object: String },
    /// Reading the object failed while its header was read.
    #[error("reading {object}: {source}")]
    Read {
        object: String,
        #[source]
        source: std::io::Error,
    },
}

fn names_or_none(names: &[String]) -> String {
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

fn unusable_note(unusable: &[String]) -> String {
    if unusable.is_empty() { String::new() } else { format!("; not usable: {}", unusable.join(", ")) }
}

impl CryptError {
    /// Whether decryption failed for want of a matching identity (as opposed to a damaged
    /// or foreign object).
    #[must_use]
    pub fn is_missing_identity(&self) -> bool {
        matches!(self, CryptError::NoIdentities { .. } | CryptError::NoMatchingIdentity { .. })
    }
}

/// Public keys a backup is encrypted to: X25519 (`age1...`) and `ssh-ed25519`.
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<RecipientKey>,
}

#[derive(Clone)]
enum RecipientKey {
    X25519(x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recipients").field("count", &self.keys.len()).finish()
    }
}

/// How a recipient appears in a message: at most 60 characters, and a private key given by
/// mistake not at all.
fn shown(recipient: &str) -> String {
    if looks_private(recipient) {
        return "(a private key, not shown)".into();
    }
    let mut s: String = recipient.chars().take(60).collect();
    if recipient.chars().count() > 60 {
        s.push_str("...");
    }
    s
}

fn looks_private(s: &str) -> bool {
    let upper = s.trim_start().to_ascii_uppercase();
    upper.starts_with("AGE-SECRET-KEY-") || upper.starts_with("AGE-PLUGIN-") || upper.contains("PRIVATE KEY")
}

impl Recipients {
    /// Parses public keys, one per item (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`CryptError::Recipient`] naming the first item that is not an `age1...` or
    /// `ssh-ed25519` public key; [`CryptError::NoRecipients`] for none.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, CryptError> {
        let keys = items.into_iter().map(parse_recipient).collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(CryptError::NoRecipients);
        }
        Ok(Self { keys })
    }

    /// Parses a comma-separated list (a `backup-encrypt=` value).
    ///
    /// # Errors
    /// As [`Self::parse`]; an empty item is a bad recipient.
    pub fn parse_list(list: &str) -> Result<Self, CryptError> {
        Self::parse(list.split(','))
    }

    /// How many keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for a parsed list (kept for clippy's `len_without_is_empty`).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A new age encryptor (a fresh file key) for these recipients.
    fn encryptor(&self, object: &str) -> Result<age::Encryptor, CryptError> {
        let dyns = self.keys.iter().map(|k| match k {
            RecipientKey::X25519(r) => r as &dyn age::Recipient,
            RecipientKey::Ssh(r) => r as &dyn age::Recipient,
        });
        age::Encryptor::with_recipients(dyns)
            .map_err(|e| CryptError::Encrypt { object: object.to_owned(), reason: e.to_string() })
    }
}

fn parse_recipient(item: &str) -> Result<RecipientKey, CryptError> {
    let r = item.trim();
    let bad = |reason| CryptError::Recipient { recipient: shown(r), reason };
    if r.is_empty() {
        return Err(bad("empty; give age1... or ssh-ed25519 public keys, separated by commas"));
    }
    if looks_private(r) {
        return Err(bad("this is a private key: give its public key (age-keygen -y, or the .pub file)"));
    }
    if r.starts_with("age1") {
        return r
            .parse::<x25519::Recipient>()
            .map(RecipientKey::X25519)
            .map_err(|_| bad("not a valid age1... public key"));
    }
    if r.starts_with("ssh-ed25519 ") {
        return match r.parse::<age::ssh::Recipient>() {
            Ok(k @ age::ssh::Recipient::SshEd25519(..)) => Ok(RecipientKey::Ssh(k)),
            _ => Err(bad("not a valid ssh-ed25519 public key")),
        };
    }
    if r.starts_with("ssh-") || r.starts_with("ecdsa-") || r.starts_with("sk-") {
        return Err(bad("only ssh-ed25519 keys are supported among SSH keys; use an ed25519 key or an age1... key"));
    }
    Err(bad("not a public key: expected age1... (age-keygen) or ssh-ed25519 AAAA..."))
}

/// Private keys to decrypt with, each known by the name of the secret that holds it.
#[derive(Default)]
pub struct Identities {
    keys: Vec<(String, Key)>,
    /// Configured identities that could not be used, as `NAME (why)`.
    unusable: Vec<String>,
}

enum Key {
    X25519(x25519::Identity),
    Ssh(SshIdentity),
}

impl Key {
    fn as_identity(&self) -> &dyn age::Identity {
        match self {
            Key::X25519(k) => k,
            Key::Ssh(k) => k,
        }
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities").field("names", &self.names()).field("unusable", &self.unusable).finish()
    }
}

impl Identities {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the keys in the secret `name`: an age identity file (`AGE-SECRET-KEY-1...` lines,
    /// `#` comments, as `age-keygen` writes it) or an unencrypted OpenSSH ed25519 private key.
    /// The caller keeps (and should wipe) `value`; nothing of it is kept in an error.
    ///
    /// # Errors
    /// [`CryptError::Identity`] saying what the value is not.
    pub fn add(&mut self, name: &str, value: &[u8]) -> Result<(), CryptError> {
        let bad = |reason| CryptError::Identity { name: name.to_owned(), reason };
        let text = std::str::from_utf8(value).map_err(|_| bad("it is not text"))?;
        if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            let id = SshIdentity::from_buffer(text.as_bytes(), None)
                .map_err(|_| bad("it is not a valid OpenSSH private key"))?;
            if matches!(id, SshIdentity::Encrypted(_)) {
                return Err(bad("it is passphrase-protected; store an unencrypted copy (ssh-keygen -p -N '' -f COPY)"));
            }
            // The key's type is in its public half.
            return match age::ssh::Recipient::try_from(id.clone()) {
                Ok(age::ssh::Recipient::SshEd25519(..)) if matches!(id, SshIdentity::Unencrypted(_)) => {
                    self.keys.push((name.to_owned(), Key::Ssh(id)));
                    Ok(())
                }
                _ => Err(bad("only ed25519 SSH keys are supported")),
            };
        }
        let mut found = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let k = line.parse::<x25519::Identity>().map_err(|_| {
                bad("expected AGE-SECRET-KEY-1... lines (an age-keygen file) or an OpenSSH ed25519 private key")
            })?;
            found.push(Key::X25519(k));
        }
        if found.is_empty() {
            return Err(bad("it holds no key"));
        }
        self.keys.extend(found.into_iter().map(|k| (name.to_owned(), k)));
        Ok(())
    }

    /// Records a configured identity that could not be used (`why`: e.g. "no such secret"),
    /// for the message when nothing decrypts.
    pub fn unusable(&mut self, name: &str, why: &str) {
        self.unusable.push(format!("{name} ({why})"));
    }

    /// The names of the secrets keys were taken from, in order, each once.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (n, _) in &self.keys {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
        out
    }

    /// Whether no key was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|(_, k)| k.as_identity())
    }

    /// The error for an object none of these keys opens.
    fn none_match(&self, object: &str) -> CryptError {
        if self.keys.is_empty() && self.unusable.is_empty() {
            CryptError::NoIdentities { object: object.to_owned() }
        } else {
            CryptError::NoMatchingIdentity {
                object: object.to_owned(),
                tried: self.names(),
                unusable: self.unusable.clone(),
            }
        }
    }
}
