//! The tar/pax reader restore and verify use, on arbitrary bytes: every entry is read to its
//! end, with the default limits and with small ones so the limit paths are reached too.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use voltool_backup::tarparse::{Limits, TarReader};

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::default(), small()] {
        let mut t = TarReader::with_limits(data, limits);
        let mut sink = Vec::new();
        while let Ok(Some(h)) = t.next_entry() {
            // A ustar name/prefix is at most 256 bytes whatever the limit.
            assert!(h.path.len() <= limits.path.max(256));
            assert!(h.xattrs.len() <= limits.xattrs as usize);
            sink.clear();
            let _ = t.contents().take(1 << 20).read_to_end(&mut sink);
        }
        assert!(t.count() <= limits.entries + 1);
    }
});

fn small() -> Limits {
    Limits {
        meta_headers: 3,
        meta_bytes: 4096,
        meta_record: 2048,
        pax_records: 8,
        xattrs: 2,
        xattr_name: 16,
        xattr_value: 64,
        xattr_total: 100,
        path: 300,
        entries: 5,
    }
}
