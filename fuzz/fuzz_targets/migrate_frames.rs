//! The migration stream's frame reader (what a receiver reads from ssh) on arbitrary bytes:
//! the data read to its end, then the manifest trailer taken and decompressed (held, and
//! streamed: the same bytes). Then the same
//! bytes as a sender's data and manifest: what the writer frames, the reader gives back.
#![no_main]

use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use voltool_migrate::{FrameReader, FrameWriter, Trailer};

fuzz_target!(|data: &[u8]| {
    let mut r = FrameReader::new(data);
    let mut sink = Vec::new();
    // Nothing is delivered that the stream did not carry.
    if r.read_to_end(&mut sink).is_ok() {
        assert!(sink.len() <= data.len());
    }
    if let Ok(t) = r.take_manifest() {
        // The streamed manifest is the held one.
        let held = t.clone().into_json();
        let mut streamed = Vec::new();
        let read = t.into_reader().map(|mut s| s.read_to_end(&mut streamed));
        if let (Ok(held), Ok(Ok(_))) = (held, read) {
            assert_eq!(held, streamed);
        }
    }
    roundtrip(data);
});

fn roundtrip(data: &[u8]) {
    let Some((&[a, b], rest)) = data.split_first_chunk::<2>().map(|(h, r)| (h, r)) else { return };
    let k = (usize::from(a & 0x7f) << 8 | usize::from(b)).min(rest.len());
    let (payload, json) = rest.split_at(k);
    let mut w = FrameWriter::new(Vec::new());
    for chunk in payload.chunks(usize::from(b).max(1)) {
        w.write_all(chunk).unwrap();
    }
    let trailer = if a & 0x80 == 0 { Trailer::Json(json.to_vec()) } else { Trailer::compressed(json).unwrap() };
    let wire = w.finish(&trailer).unwrap();
    let mut r = FrameReader::new(wire.as_slice());
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, payload);
    assert_eq!(r.take_manifest().unwrap().into_json().unwrap(), json);
}
