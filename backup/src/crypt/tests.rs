//! The crypt module: round trips to X25519 and ssh-ed25519 keys through a directory target,
//! the wrong or a missing identity, damaged and truncated objects, and what messages show.
//! (Constant memory over a long stream: `backup/tests/crypt_stream.rs`, which counts heap
//! bytes with an allocator of its own.)

use std::io::{Read, Write};

use age::secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::*;
use crate::target::{FileTarget, Target};

/// A test-only key pair (made with `ssh-keygen -t ed25519 -N ''` for these tests; it
/// protects nothing).
const SSH_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBoT3Co5wZwv0hgjhG4wfk/dYvYBjrRBO7rcY1LrqeKsgAAAJAJAulbCQLp
WwAAAAtzc2gtZWQyNTUxOQAAACBoT3Co5wZwv0hgjhG4wfk/dYvYBjrRBO7rcY1LrqeKsg
AAAEAyp0ILggzLP+BBReM1o6dHlyEyqoP6MZ5fOdfRfqL35GhPcKjnBnC/SGCOEbjB+T91
i9gGOtEE7utxjUuup4qyAAAADHZvbHRvb2wtdGVzdAE=
-----END OPENSSH PRIVATE KEY-----
";
const SSH_PUB: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhPcKjnBnC/SGCOEbjB+T91i9gGOtEE7utxjUuup4qy voltool-test";

/// A fresh X25519 key: (identity file text, public key).
fn age_key() -> (String, String) {
    let k = age::x25519::Identity::generate();
    let file = format!("# created: now\n# public key: {}\n{}\n", k.to_public(), k.to_string().expose_secret());
    (file, k.to_public().to_string())
}

fn ids(named: &[(&str, &str)]) -> Identities {
    let mut ids = Identities::new();
    for (name, value) in named {
        ids.add(name, value.as_bytes()).expect("identity");
    }
    ids
}

/// Bytes that do not compress or repeat, so a flipped byte lands in real data.
fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Encrypts `plain` to `recipients` as object `name` in a directory target.
fn seal_to(t: &FileTarget, name: &str, recipients: &Recipients, plain: &[u8]) -> StoredObject {
    let mut w = SealedWriter::new(t.create(name).expect("create"), recipients, name).expect("seal");
    for chunk in plain.chunks(333_333) {
        w.write_all(chunk).expect("write");
    }
    assert!(!t.exists(name).expect("exists"), "{name} visible before finish");
    w.finish().expect("finish")
}

fn open_all(t: &FileTarget, name: &str, ids: &Identities) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    open(t.open(name).expect("open"), ids, name).map_err(std::io::Error::other)?.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn round_trip_to_x25519_and_ssh_keys_with_the_stored_digest() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = FileTarget::new(dir.path().to_path_buf());
    let (file, public) = age_key();
    let r = Recipients::parse_list(&format!(" {public} ,{SSH_PUB}")).expect("recipients");
    assert_eq!(r.len(), 2);
    let plain = data(3 << 20 | 12_345);
    let stored = seal_to(&t, "x.tar.zst.age", &r, &plain);
    let bytes = std::fs::read(dir.path().join("x.tar.zst.age")).expect("read");
    assert!(bytes.starts_with(AGE_MAGIC), "an age file");
    assert_eq!(stored.size, bytes.len() as u64);
    assert_eq!(stored.sha256, hex::encode(Sha256::digest(&bytes)));
    // Each key alone opens it.
    for id in [ids(&[("age-key", &file)]), ids(&[("ssh-key", SSH_KEY)])] {
        assert_eq!(open_all(&t, "x.tar.zst.age", &id).expect("decrypt"), plain, "{id:?}");
    }
    // The stored hash under the decryption sees the stored bytes.
    let h = StoredHash::new();
    let mut back = Vec::new();
    let id = ids(&[("k", &file)]);
    open(h.reader(t.open("x.tar.zst.age").expect("open")), &id, "x")
        .expect("open")
        .read_to_end(&mut back)
        .expect("read");
    assert_eq!(h.result(), stored);
    // A small object through the inline sealer (the manifest's path).
    let mut s = r.seal(Vec::new(), "m.json.age").expect("seal");
    s.write_all(b"{\"manifest\":1}").expect("write");
    let sealed = s.finish().expect("finish");
    let mut m = Vec::new();
    open(std::io::Cursor::new(sealed), &id, "m.json.age").expect("open").read_to_end(&mut m).expect("read");
    assert_eq!(m, b"{\"manifest\":1}");
}

#[test]
fn without_a_matching_identity_the_message_names_what_was_tried_and_what_to_do() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = FileTarget::new(dir.path().to_path_buf());
    let (_, public) = age_key();
    let (other, _) = age_key();
    seal_to(&t, "b.tar.zst.age", &Recipients::parse([public.as_str()]).expect("r"), b"secret data");
    let mut wrong = ids(&[("old-key", &other), ("laptop", SSH_KEY)]);
    wrong.unusable("gone", "no such secret");
    let e = match open(t.open("b.tar.zst.age").expect("open"), &wrong, "b.tar.zst.age") {
        Err(e) => e,
        Ok(_) => panic!("opened with the wrong keys"),
    };
    assert!(e.is_missing_identity(), "{e:?}");
    let msg = e.to_string();
    for want in ["b.tar.zst.age", "tried: old-key, laptop", "gone (no such secret)", "voltool secret add", "identities"]
    {
        assert!(msg.contains(want), "{want:?} in {msg}");
    }
    let key_line = other.lines().last().expect("key line");
    assert!(!msg.contains(key_line) && !msg.contains("b3BlbnNzaC1rZXkt"), "no key material: {msg}");
    let e = match open(t.open("b.tar.zst.age").expect("open"), &Identities::new(), "b.tar.zst.age") {
        Err(e) => e,
        Ok(_) => panic!("opened without keys"),
    };
    assert!(matches!(e, CryptError::NoIdentities { .. }), "{e:?}");
    assert!(e.to_string().contains("no identity is configured"), "{e}");
    // Not an age object at all.
    t.put_small("plain.tar.zst", b"\x28\xb5\x2f\xfd plain zstd").expect("put");
    let e = open(t.open("plain.tar.zst").expect("open"), &wrong, "plain.tar.zst").err().expect("not age");
    assert!(matches!(e, CryptError::NotAge { .. }), "{e:?}");
}

#[test]
fn a_changed_or_truncated_object_fails_to_decrypt_naming_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = FileTarget::new(dir.path().to_path_buf());
    let (file, public) = age_key();
    let id = ids(&[("k", &file)]);
    let plain = data(1 << 20);
    seal_to(&t, "c.tar.zst.age", &Recipients::parse([public.as_str()]).expect("r"), &plain);
    let good = std::fs::read(dir.path().join("c.tar.zst.age")).expect("read");
    let chunk = (64 << 10) + 16;
    // 1 MiB is 16 whole chunks, the last of them marked last: no shorter chunk after them.
    let header = good.len() - 16 * chunk;
    let cases: Vec<(&str, Vec<u8>, std::io::ErrorKind)> = vec![
        ("a flipped byte", flip(&good, good.len() / 2), std::io::ErrorKind::InvalidData),
        ("a flipped last byte", flip(&good, good.len() - 1), std::io::ErrorKind::InvalidData),
        ("cut mid-chunk", good[..good.len() - 1000].to_vec(), std::io::ErrorKind::InvalidData),
        ("cut at a chunk boundary", good[..header + 8 * chunk].to_vec(), std::io::ErrorKind::UnexpectedEof),
    ];
    for (what, bytes, kind) in cases {
        std::fs::write(dir.path().join("bad.age"), &bytes).expect("write");
        let e = open_all(&t, "bad.age", &id).expect_err(what);
        assert_eq!(e.kind(), kind, "{what}: {e}");
        assert!(e.to_string().contains("bad.age"), "{what}: names the object: {e}");
    }
    // A changed header: the MAC no longer matches.
    std::fs::write(dir.path().join("hdr.age"), flip(&good, 60)).expect("write");
    assert!(open(t.open("hdr.age").expect("open"), &id, "hdr.age").is_err(), "changed header accepted");
}

fn flip(b: &[u8], at: usize) -> Vec<u8> {
    let mut v = b.to_vec();
    v[at] ^= 0x20;
    v
}

#[test]
fn a_dropped_writer_leaves_nothing_on_the_target() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = FileTarget::new(dir.path().to_path_buf());
    let (_, public) = age_key();
    let r = Recipients::parse([public.as_str()]).expect("r");
    let mut w = SealedWriter::new(t.create("d.tar.zst.age").expect("create"), &r, "d.tar.zst.age").expect("seal");
    w.write_all(&data(5 << 20)).expect("write");
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0, "nothing left");
}

#[test]
fn recipients_that_are_not_public_keys_are_named_and_private_keys_never_shown() {
    let (file, public) = age_key();
    let private = file.lines().last().expect("key line").to_owned();
    for (list, want) in [
        (format!("{public},age1nope"), "\"age1nope\": not a valid age1"),
        (format!("{public},"), "empty"),
        ("ssh-rsa AAAAB3NzaC1yc2E x@y".to_owned(), "only ssh-ed25519"),
        ("ssh-ed25519 AAAAnotbase64".to_owned(), "not a valid ssh-ed25519"),
        ("hello".to_owned(), "\"hello\": not a public key"),
        (private.clone(), "private key"),
    ] {
        let e = Recipients::parse_list(&list).expect_err(&list).to_string();
        assert!(e.contains(want), "{list}: {e}");
        assert!(!e.contains(&private), "private key echoed: {e}");
    }
    assert!(matches!(Recipients::parse([]), Err(CryptError::NoRecipients)));
}

#[test]
fn identities_are_age_files_or_ed25519_ssh_keys_and_bad_ones_are_not_echoed() {
    let (file, _) = age_key();
    let (second, _) = age_key();
    let mut ids = Identities::new();
    ids.add("two", format!("{file}\n{second}").as_bytes()).expect("two keys in one file");
    ids.add("ssh", SSH_KEY.as_bytes()).expect("ssh key");
    assert_eq!(ids.names(), ["two", "ssh"]);
    assert!(!format!("{ids:?}").contains("AGE-SECRET"), "Debug shows names only");
    for (value, want) in [
        ("AGE-SECRET-KEY-1NOTAKEY".to_owned(), "expected AGE-SECRET-KEY-1"),
        ("# only a comment\n".to_owned(), "holds no key"),
        (SSH_KEY.replace("b3Bl", "XXXX"), "not a valid OpenSSH"),
    ] {
        let e = Identities::new().add("bad", value.as_bytes()).expect_err(&value).to_string();
        assert!(e.starts_with("secret bad is not a usable age identity") && e.contains(want), "{e}");
        assert!(!e.contains("NOTAKEY") && !e.contains("XXXX"), "value echoed: {e}");
    }
}

/// The plaintext `start .. start + len` of an object through [`open_range`], and the bytes
/// fetched from the target for it.
fn read_range(t: &FileTarget, name: &str, ids: &Identities, start: u64, len: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let size = t.read_small(name, 64 << 20).expect("read").len() as u64;
    let fetched = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let object = RangedObject::new(Box::new(t.clone()), name, size, window_for(len), fetched.clone());
    let mut out = Vec::new();
    let mut r = open_range(object, ids, start, len).map_err(|e| match e {
        CryptError::Read { source, .. } => source,
        e => std::io::Error::other(e),
    })?;
    r.read_to_end(&mut out)?;
    Ok((out, fetched.load(std::sync::atomic::Ordering::Relaxed)))
}

#[test]
fn a_range_of_an_encrypted_object_reads_only_the_chunks_that_hold_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = FileTarget::new(dir.path().to_path_buf());
    let (file, public) = age_key();
    let id = ids(&[("k", &file)]);
    let plain = data((4 << 20) + 12_345);
    seal_to(&t, "r.tar.zst.age", &Recipients::parse([public.as_str()]).expect("r"), &plain);
    let chunk = 64u64 << 10;
    // Within a chunk, across a boundary, from the start, the last bytes, a long range.
    let cases = [(100, 1000), (3 * chunk - 10, 20), (0, 1), (plain.len() as u64 - 7, 7), (chunk + 5, 5 * chunk)];
    for (start, len) in cases {
        let (got, fetched) = read_range(&t, "r.tar.zst.age", &id, start, len).expect("range");
        assert_eq!(got, plain[start as usize..(start + len) as usize], "range {start}+{len}");
        // The header window and the chunks that hold the range, nothing more.
        let bound = (16 << 10) + (len / chunk + 2) * (chunk + 16);
        assert!(fetched <= bound, "range {start}+{len}: fetched {fetched} > {bound}");
    }
    // A changed byte in a chunk the range needs fails; in another one it is not read at all.
    let good = std::fs::read(dir.path().join("r.tar.zst.age")).expect("read");
    let header = good.len() as u64 - (plain.len() as u64).div_ceil(chunk) * 16 - plain.len() as u64;
    let at = header + 40 * (chunk + 16) + 100;
    std::fs::write(dir.path().join("bad.age"), flip(&good, at as usize)).expect("write");
    let e = read_range(&t, "bad.age", &id, 40 * chunk + 50, 100).expect_err("a damaged chunk");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("bad.age"), "{e}");
    assert_eq!(read_range(&t, "bad.age", &id, 10, 100).expect("another chunk").0, plain[10..110]);
    // Shorter than its recorded size: the last chunk is never taken for one.
    std::fs::write(dir.path().join("cut.age"), &good[..good.len() - (chunk as usize + 16)]).expect("write");
    let size = good.len() as u64;
    let fetched = std::sync::Arc::default();
    let object = RangedObject::new(Box::new(t.clone()), "cut.age", size, window_for(10), fetched);
    let mut out = Vec::new();
    let r = open_range(object, &id, plain.len() as u64 - 10, 10).map_err(std::io::Error::other);
    assert!(r.and_then(|mut r| r.read_to_end(&mut out)).is_err(), "a cut object read as whole");
    // Without the identity: the error that says so.
    let (other, _) = age_key();
    let e = read_range(&t, "r.tar.zst.age", &ids(&[("other", &other)]), 0, 10).expect_err("no key");
    assert!(e.to_string().contains("other"), "{e}");
}

#[test]
fn a_lazily_opened_stream_is_looked_at_only_when_first_read() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = FileTarget::new(dir.path().to_path_buf());
    let (file, public) = age_key();
    let plain = data(200_000);
    seal_to(&t, "l.age", &Recipients::parse([public.as_str()]).expect("r"), &plain);
    let sealed = std::fs::read(dir.path().join("l.age")).expect("read");
    // Nothing is read (nor are the identities asked for) before the first read.
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = asked.clone();
    let mut r = open_if_sealed_lazily(
        std::io::Cursor::new(sealed.clone()),
        move || {
            a.store(true, std::sync::atomic::Ordering::SeqCst);
            ids(&[("k", &file)])
        },
        "l.age",
    );
    assert!(!asked.load(std::sync::atomic::Ordering::SeqCst), "identities read before the first read");
    let mut out = Vec::new();
    r.read_to_end(&mut out).expect("decrypt");
    assert_eq!(out, plain);
    // A plain stream passes as it is; a sealed one without the key fails at its first read.
    let mut out = Vec::new();
    open_if_sealed_lazily(std::io::Cursor::new(plain.clone()), Identities::new, "p")
        .read_to_end(&mut out)
        .expect("plain");
    assert_eq!(out, plain);
    let e = open_if_sealed_lazily(std::io::Cursor::new(sealed), Identities::new, "l.age")
        .read_to_end(&mut Vec::new())
        .expect_err("no identity");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("l.age"), "{e}");
}
