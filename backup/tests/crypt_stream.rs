//! Encryption and decryption of a long stream in constant memory: 256 MiB go through a
//! [`SealedWriter`] into a pipe and back out through `crypt::open`, and the heap never holds
//! more than a few blocks. A test binary of its own because it counts every heap byte with
//! its own global allocator (other tests running beside it would be counted too).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};
use voltool_backup::crypt::{self, BLOCK, BLOCKS};
use voltool_backup::{Identities, ObjectWriter, Recipients, SealedWriter, TargetError};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// An object writer that is one end of a pipe (the other end decrypts as it is written).
struct PipeObject(std::io::PipeWriter);

impl Write for PipeObject {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for PipeObject {
    fn token(&self) -> Option<String> {
        None
    }
    fn commit(self: Box<Self>) -> Result<u64, TargetError> {
        Ok(0)
    }
    fn abort(self: Box<Self>) {}
}

/// A deterministic byte stream, made as it is written (never held whole): a random block
/// with the chunk's number in its first bytes.
fn fill(buf: &mut [u8], base: &[u8], n: u64) {
    buf.copy_from_slice(&base[..buf.len()]);
    buf[..8].copy_from_slice(&n.to_le_bytes());
}

#[test]
fn a_256_mib_stream_is_encrypted_and_decrypted_in_constant_memory() {
    const TOTAL: usize = 256 << 20;
    let key = age::x25519::Identity::generate();
    let recipients = Recipients::parse([key.to_public().to_string().as_str()]).expect("recipients");
    let mut ids = Identities::new();
    {
        use age::secrecy::ExposeSecret;
        ids.add("k", key.to_string().expose_secret().as_bytes()).expect("identity");
    }
    let (rx, tx) = std::io::pipe().expect("pipe");
    let reader = std::thread::spawn(move || {
        let mut plain = crypt::open(rx, &ids, "stream.age").expect("open");
        let (mut h, mut n, mut buf) = (Sha256::new(), 0usize, vec![0u8; 1 << 16]);
        loop {
            let k = plain.read(&mut buf).expect("decrypt");
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k;
        }
        (n, h.finalize())
    });
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut w = SealedWriter::new(Box::new(PipeObject(tx)), &recipients, "stream.age").expect("seal");
    let base: Vec<u8> = (0..300_007u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let (mut want, mut chunk, mut k) = (Sha256::new(), vec![0u8; base.len()], 0u64);
    let mut left = TOTAL;
    while left > 0 {
        let n = left.min(chunk.len());
        k += 1;
        fill(&mut chunk[..n], &base, k);
        want.update(&chunk[..n]);
        w.write_all(&chunk[..n]).expect("write");
        left -= n;
    }
    let stored = w.finish().expect("finish");
    let (n, got) = reader.join().expect("reader");
    assert_eq!(n, TOTAL);
    assert_eq!(got, want.finalize(), "the plaintext comes back");
    assert!(stored.size > TOTAL as u64, "{stored:?}");
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let bound = (BLOCKS + 2) * BLOCK + (4 << 20);
    println!("peak heap above the start: {} KiB (bound {} KiB)", peak >> 10, bound >> 10);
    assert!(peak < bound, "the heap grew by {peak} bytes for a {TOTAL}-byte stream");
}
