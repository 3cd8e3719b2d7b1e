//! The S3 target against every test server (s3s-fs and moto), with and without
//! `checksums=when-required`: each body here is four tests (`s3_matrix!`, see `s3_servers`),
//! each in a bucket of its own that is removed afterwards.

use std::io::Write;
use std::time::{Duration, Instant};

use voltool_backup::target::Checksums;
use voltool_backup::target::s3::{S3Target, part_size};
use voltool_backup::{Target, TargetError};

use super::s3_servers::{Kind, Recorder, TestBucket, Variant, s3_matrix};
use super::{MIB, read_hash, runtime, write_stream};

/// Nothing of an upload of `key` (or of upload `token`) is left on the server.
fn assert_no_upload_left(bucket: &TestBucket, key: &str, token: Option<&str>) {
    let left = bucket.open_uploads(key, token);
    assert!(left.is_empty(), "open multipart upload left for {key}: {left:?}");
}

/// Neither voltool nor the server itself shows the object.
fn assert_no_object(bucket: &TestBucket, t: &S3Target, name: &str, key: &str) {
    assert!(!t.exists(name).expect("exists"), "{name} is visible");
    assert!(bucket.get(key).is_none(), "{key} is stored");
}

s3_matrix!(round_trip_of_a_40_mib_stream_in_odd_chunks);
fn round_trip_of_a_40_mib_stream_in_odd_chunks(v: &Variant) {
    let bucket = v.bucket();
    let rt = runtime();
    let prefix = "round-trip";
    let sp = bucket.spec(prefix, 10_000);
    let t = S3Target::new(sp.clone(), rt.handle().clone()).expect("target");
    assert_eq!(t.describe(), format!("s3://{}/{prefix}", bucket.name));

    let len = 40 * MIB + 12_345;
    let mut w = t.create("a.tar.zst").expect("create");
    let token = w.token().expect("an upload id");
    assert!(!token.is_empty());
    let want = write_stream(&mut w, 1, len).expect("write");
    assert!(!t.exists("a.tar.zst").expect("exists"), "visible before commit");
    assert_eq!(w.commit().expect("commit"), len);
    assert!(t.exists("a.tar.zst").expect("exists"));
    assert_eq!(read_hash(t.open("a.tar.zst").expect("open")), (len, want.clone()));
    // The server holds the very bytes (read past voltool).
    let stored = bucket.get(&sp.key("a.tar.zst")).expect("stored");
    assert_eq!((stored.len() as u64, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored))), (len, want));
    assert_no_upload_left(&bucket, &sp.key("a.tar.zst"), Some(&token));
    t.delete("a.tar.zst").expect("delete");
    assert!(!t.exists("a.tar.zst").expect("exists"));
}

s3_matrix!(a_listing_follows_pages_and_leaves_deeper_prefixes_out);
fn a_listing_follows_pages_and_leaves_deeper_prefixes_out(v: &Variant) {
    let bucket = v.bucket();
    let rt = runtime();
    let prefix = "list";
    let t = S3Target::new(bucket.spec(prefix, 10_000), rt.handle().clone()).expect("target");
    assert_eq!(t.list(10).expect("empty"), [], "nothing under a new prefix");
    let names: Vec<String> = (0..25).map(|i| format!("b-{i:02}.manifest.json")).collect();
    for (i, n) in names.iter().enumerate() {
        t.put_small(n, &vec![b'x'; i]).expect("put");
    }
    // Another target under this one's prefix, and one next to it sharing its name's start.
    let deeper = S3Target::new(bucket.spec(&format!("{prefix}/sub"), 10_000), rt.handle().clone()).expect("target");
    deeper.put_small("c.manifest.json", b"{}").expect("put");
    let beside = S3Target::new(bucket.spec(&format!("{prefix}x"), 10_000), rt.handle().clone()).expect("target");
    beside.put_small("d.manifest.json", b"{}").expect("put");
    let got = t.list_paged(1000, 10).expect("three pages");
    assert_eq!(got.iter().map(|l| l.name.clone()).collect::<Vec<_>>(), names);
    assert!(got.iter().enumerate().all(|(i, l)| l.size == i as u64), "{got:?}");
    assert_eq!(t.list(1000).expect("one page"), got);
    // 25 objects and the common prefix `sub/`: 26 entries.
    assert_eq!(t.list_paged(26, 10).expect("at the limit").len(), 25);
    let e = t.list_paged(25, 10).expect_err("over the limit");
    assert!(matches!(e, TargetError::TooManyObjects { limit: 25, .. }), "{e:?}");
    assert_eq!(deeper.list(10).expect("deeper").len(), 1);
}

s3_matrix!(small_objects_empty_streams_exists_delete_and_not_found);
fn small_objects_empty_streams_exists_delete_and_not_found(v: &Variant) {
    let bucket = v.bucket();
    let rt = runtime();
    let sp = bucket.spec("small", 10_000);
    let t = S3Target::new(sp.clone(), rt.handle().clone()).expect("target");

    t.put_small("m.json", b"{\"v\":1}").expect("put");
    assert!(t.exists("m.json").expect("exists"));
    assert_eq!(t.read_small("m.json", 100).expect("read"), b"{\"v\":1}");
    assert!(matches!(t.read_small("m.json", 3), Err(TargetError::TooLarge { .. })));
    t.put_small("m.json", b"{}").expect("overwrite");
    assert_eq!(t.read_small("m.json", 100).expect("read"), b"{}");
    t.put_small("empty", b"").expect("put empty");
    assert_eq!(t.read_small("empty", 100).expect("read empty"), b"");

    assert!(!t.exists("nope").expect("exists"));
    assert!(matches!(t.open("nope"), Err(TargetError::NotFound { .. })), "missing object is NotFound");
    assert!(matches!(t.read_small("nope", 10), Err(TargetError::NotFound { .. })));
    t.delete("m.json").expect("delete");
    t.delete("m.json").expect("delete again");
    assert!(!t.exists("m.json").expect("exists"));
    assert!(matches!(t.create("../evil"), Err(TargetError::Config { .. })));

    // An empty stream and a stream ending exactly at a part boundary.
    let w = t.create("zero.tar.zst").expect("create");
    let token = w.token();
    assert_eq!(w.commit().expect("commit empty"), 0);
    assert_eq!(read_hash(t.open("zero.tar.zst").expect("open")).0, 0);
    assert_no_upload_left(&bucket, &sp.key("zero.tar.zst"), token.as_deref());
    let mut w = t.create("eight.tar.zst").expect("create");
    let want = write_stream(&mut w, 8, 8 * MIB).expect("write");
    assert_eq!(w.commit().expect("commit"), 8 * MIB);
    assert_eq!(read_hash(t.open("eight.tar.zst").expect("open")), (8 * MIB, want));
    let mut w = t.create("tiny.tar.zst").expect("create");
    w.write_all(b"hello").expect("write");
    w.flush().expect("flush");
    assert_eq!(w.commit().expect("commit"), 5);
    assert_eq!(t.read_small("tiny.tar.zst", 10).expect("read"), b"hello");
    for n in ["empty", "zero.tar.zst", "eight.tar.zst", "tiny.tar.zst"] {
        t.delete(n).expect("delete");
    }
    assert!(bucket.objects("small").is_empty(), "{:?}", bucket.objects("small"));
    t.cleanup("tiny.tar.zst", None).expect("cleanup with nothing to do");
}

s3_matrix!(max_parts_10_holds_a_300_mib_stream);
fn max_parts_10_holds_a_300_mib_stream(v: &Variant) {
    let bucket = v.bucket();
    let rt = runtime();
    let sp = bucket.spec("max-parts-10", 10);
    let t = S3Target::new(sp.clone(), rt.handle().clone()).expect("target");
    let len = 300 * MIB;
    let sizes: Vec<u64> = (0..10).map_while(|i| part_size(i, 10)).collect();
    let mut used = Vec::new();
    let mut left = len;
    for s in &sizes {
        if left == 0 {
            break;
        }
        used.push((*s).min(left) / MIB);
        left = left.saturating_sub(*s);
    }
    println!("max_parts=10: part sizes (MiB) {used:?}");
    let start = Instant::now();
    let mut w = t.create("big.tar.zst").expect("create");
    let want = write_stream(&mut w, 10, len).expect("write");
    assert_eq!(w.commit().expect("commit"), len);
    let up = start.elapsed();
    let got = read_hash(t.open("big.tar.zst").expect("open"));
    println!(
        "max_parts=10 ({}): 300 MiB uploaded in {:.1} s, read back in {:.1} s",
        v.describe(),
        up.as_secs_f64(),
        (start.elapsed() - up).as_secs_f64()
    );
    assert_eq!(got, (len, want));
    // A multipart ETag names the number of parts ("md5-PARTS").
    let etag = bucket.etag(&sp.key("big.tar.zst"));
    assert!(etag.ends_with(&format!("-{}", used.len())), "etag of {} parts expected: {etag}", used.len());
    t.delete("big.tar.zst").expect("delete");
}

s3_matrix!(dropped_and_aborted_writers_leave_nothing);
fn dropped_and_aborted_writers_leave_nothing(v: &Variant) {
    let bucket = v.bucket();
    let rt = runtime();
    let sp = bucket.spec("abandon", 10_000);
    let t = S3Target::new(sp.clone(), rt.handle().clone()).expect("target");

    let mut w = t.create("dropped.tar.zst").expect("create");
    let dropped = w.token();
    write_stream(&mut w, 2, 21 * MIB).expect("write");
    drop(w);
    let mut w = t.create("aborted.tar.zst").expect("create");
    let aborted = w.token();
    write_stream(&mut w, 3, 13 * MIB).expect("write");
    w.abort();

    for (name, token) in [("dropped.tar.zst", dropped), ("aborted.tar.zst", aborted)] {
        assert_no_object(&bucket, &t, name, &sp.key(name));
        assert_no_upload_left(&bucket, &sp.key(name), token.as_deref());
        // Cleaning up after a writer that aborted cleanly is harmless.
        t.cleanup(name, token.as_deref()).expect("cleanup with the token");
        t.cleanup(name, None).expect("cleanup");
    }
}

/// Writes 9 MiB to `name` and forgets the writer, as a killed process would (it never
/// aborts); returns the upload id once the server holds its first part.
fn abandon_upload(bucket: &TestBucket, t: &S3Target, key: &str, name: &str) -> String {
    let mut w = t.create(name).expect("create");
    let token = w.token().expect("token");
    write_stream(&mut w, 4, 9 * MIB).expect("write");
    std::mem::forget(w);
    let deadline = Instant::now() + Duration::from_secs(30);
    while bucket.parts(key, &token) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(!bucket.open_uploads(key, Some(&token)).is_empty(), "the abandoned upload should be open");
    token
}

s3_matrix!(cleanup_aborts_an_upload_a_dead_process_left);
fn cleanup_aborts_an_upload_a_dead_process_left(v: &Variant) {
    let bucket = v.bucket();
    let rt = runtime();
    let sp = bucket.spec("cleanup", 10_000);
    let t = S3Target::new(sp.clone(), rt.handle().clone()).expect("target");
    let key = sp.key("x.tar.zst");

    let token = abandon_upload(&bucket, &t, &key, "x.tar.zst");
    t.cleanup("x.tar.zst", Some(&token)).expect("cleanup");
    assert_no_upload_left(&bucket, &key, Some(&token));
    assert_no_object(&bucket, &t, "x.tar.zst", &key);
    t.cleanup("x.tar.zst", Some(&token)).expect("cleanup again");

    // An upload whose id was never recorded (the process died before saving it) is found by
    // its key where the server can list uploads; s3s-fs cannot (NotImplemented).
    if v.kind() == Kind::Moto {
        let key = sp.key("y.tar.zst");
        let lost = abandon_upload(&bucket, &t, &key, "y.tar.zst");
        t.cleanup("y.tar.zst", None).expect("cleanup without the token");
        assert_no_upload_left(&bucket, &key, Some(&lost));
        assert_no_object(&bucket, &t, "y.tar.zst", &key);
    }
}

/// The header lines (and aws-chunked trailers) of checksums that clients sent.
const CHECKSUM_HEADERS: [&str; 4] =
    ["x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm", "x-amz-trailer", "x-amz-checksum-mode"];

s3_matrix!(checksums_setting_decides_what_goes_over_the_wire);
/// Through a relay that records what reaches the server: with `checksums=when-required` no
/// checksum header or trailer is sent and reads do not ask for one, while each upload's body
/// is still covered by its SHA-256 in the signature; by default (when-supported) uploads carry
/// CRC32 checksums and reads ask for them. Either way the data round-trips.
fn checksums_setting_decides_what_goes_over_the_wire(v: &Variant) {
    let bucket = v.bucket();
    let relay = Recorder::start(&v.server.endpoint);
    let rt = runtime();
    let mut sp = bucket.spec("wire", 10_000);
    sp.endpoint = Some(relay.endpoint.clone());
    // The default variant states it, so an AWS_REQUEST_CHECKSUM_CALCULATION in the
    // environment cannot change what this test sees.
    let required = v.checksums == Some(Checksums::WhenRequired);
    sp.checksums = Some(if required { Checksums::WhenRequired } else { Checksums::WhenSupported });
    let t = S3Target::new(sp, rt.handle().clone()).expect("target");
    t.put_small("m.json", b"{\"v\":1}").expect("put");
    let mut w = t.create("a.tar.zst").expect("create");
    let want = write_stream(&mut w, 11, 9 * MIB).expect("write");
    assert_eq!(w.commit().expect("commit"), 9 * MIB);
    assert_eq!(read_hash(t.open("a.tar.zst").expect("open")), (9 * MIB, want));
    assert_eq!(t.read_small("m.json", 100).expect("read"), b"{\"v\":1}");

    let seen: Vec<(&str, Vec<String>)> = CHECKSUM_HEADERS.iter().map(|h| (*h, relay.header_values(h))).collect();
    let signed = relay.header_values("x-amz-content-sha256");
    println!("{}: checksum headers sent {seen:?}; x-amz-content-sha256 {signed:?}", v.describe());
    if required {
        assert!(seen.iter().all(|(_, values)| values.is_empty()), "no checksum may be sent: {seen:?}");
        // PutObject and the two parts: their bodies' SHA-256, not UNSIGNED-PAYLOAD.
        let hashed = signed.iter().filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).count();
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let with_body = signed.iter().filter(|s| s.len() == 64 && s.as_str() != empty).count();
        assert!(hashed == signed.len() && with_body >= 3, "signed payloads expected: {signed:?}");
    } else {
        let crc = &seen[0].1;
        assert!(crc.len() >= 3, "a CRC32 for PutObject and each part expected: {seen:?}");
        assert!(!seen[3].1.is_empty(), "reads ask for the stored checksum: {seen:?}");
    }
}
