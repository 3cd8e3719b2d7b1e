use super::*;

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn hands_over_the_whole_stream_with_bounded_buffers() {
    let want = data(10 * 1000 + 17);
    let (tx, mut rx) = channel(3, 1000);
    let w2 = want.clone();
    let t = std::thread::spawn(move || tx.pump(&mut w2.as_slice(), 300));
    let mut got = Vec::new();
    rx.read_to_end(&mut got).unwrap();
    t.join().unwrap();
    assert_eq!(got, want);
    assert_eq!(rx.read(&mut [0u8; 4]).unwrap(), 0, "the end repeats");
}

#[test]
fn a_producer_error_arrives_after_the_bytes_before_it_and_repeats() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad frame"));
            }
            let n = out.len().min(self.0);
            out[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }
    let (tx, mut rx) = channel(2, 64);
    let t = std::thread::spawn(move || tx.pump(&mut Failing(100), 64));
    let mut got = vec![0u8; 100];
    rx.read_exact(&mut got).unwrap();
    let e = rx.read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(rx.read(&mut [0u8; 1]).is_err());
    t.join().unwrap();
}

#[test]
fn a_producer_that_vanishes_is_an_error_not_an_end() {
    let (tx, mut rx) = channel(2, 8);
    let b = tx.buffer().unwrap();
    assert!(tx.send(b, 8));
    drop(tx);
    let mut got = Vec::new();
    assert!(rx.read_to_end(&mut got).is_err());
    assert_eq!(got.len(), 8);
}

#[test]
fn seeking_skips_forward_across_blocks_and_counts_the_position() {
    let want = data(5000);
    let (tx, mut rx) = channel(2, 512);
    let w2 = want.clone();
    let t = std::thread::spawn(move || tx.pump(&mut w2.as_slice(), 512));
    let mut b = [0u8; 10];
    rx.read_exact(&mut b).unwrap();
    assert_eq!(rx.seek(SeekFrom::Current(1500)).unwrap(), 1510);
    rx.read_exact(&mut b).unwrap();
    assert_eq!(&b[..], &want[1510..1520]);
    assert!(rx.seek(SeekFrom::Start(0)).is_err(), "no going back");
    assert!(rx.seek(SeekFrom::Current(10_000)).is_err(), "past the end");
    t.join().unwrap();
}

#[test]
fn a_hashed_channel_hashes_what_was_read_behind_the_reader() {
    let input = data(100_000);
    let want: [u8; 32] = Sha256::digest(&input).into();
    let (tx, mut rx, hasher) = hashed_channel(3, 4096).unwrap();
    let i2 = input.clone();
    let t = std::thread::spawn(move || tx.pump(&mut i2.as_slice(), 1000));
    // Read in odd pieces, skipping some: all of it is hashed all the same.
    let mut got = vec![0u8; 10];
    rx.read_exact(&mut got).unwrap();
    rx.seek(SeekFrom::Current(5000)).unwrap();
    let mut rest = Vec::new();
    rx.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, &input[5010..]);
    t.join().unwrap();
    drop(rx);
    assert_eq!(hasher.join().unwrap(), (100_000, want));
    // Dropped early: what was read (whole blocks handed over) is hashed, no more.
    let (tx, mut rx, hasher) = hashed_channel(2, 4096).unwrap();
    let i2 = input.clone();
    let t = std::thread::spawn(move || tx.pump(&mut i2.as_slice(), 4096));
    rx.read_exact(&mut [0u8; 5000]).unwrap();
    drop(rx);
    t.join().unwrap();
    let (n, _) = hasher.join().unwrap();
    assert_eq!(n, 8192, "the two blocks the reader had");
}

#[test]
fn hash_input_hashes_everything_and_drains_only_when_asked() {
    let input = data(100_000);
    let want: [u8; 32] = Sha256::digest(&input).into();
    // Read whole.
    let (tx, mut rx) = channel(2, 4096);
    let i2 = input.clone();
    let t = std::thread::spawn(move || hash_input(i2.as_slice(), tx, &AtomicBool::new(true)));
    let mut got = Vec::new();
    rx.read_to_end(&mut got).unwrap();
    let d = t.join().unwrap();
    assert_eq!((got, d.size, d.sha256), (input.clone(), 100_000, want));
    // The reader stops early: drained, the digest is still of everything.
    for (drain, size) in [(true, 100_000), (false, 0)] {
        let (tx, mut rx) = channel(2, 4096);
        let i2 = input.clone();
        let t = std::thread::spawn(move || hash_input(i2.as_slice(), tx, &AtomicBool::new(drain)));
        rx.read_exact(&mut [0u8; 10]).unwrap();
        drop(rx);
        let d = t.join().unwrap();
        if drain {
            assert_eq!((d.size, d.sha256), (size, want));
        } else {
            assert!(d.size < 100_000, "stopped early: {}", d.size);
        }
    }
}
