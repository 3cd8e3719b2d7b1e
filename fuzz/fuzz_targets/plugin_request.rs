//! The Docker VolumeDriver request bodies (`plugin/src/protocol/request.rs`, what dockerd
//! POSTs) on arbitrary bytes, for every endpoint's request type; a Create that parses has its
//! name and options checked as the service would (see options_check.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../plugin/src/options/mod.rs"]
mod options;
mod options_check;
#[allow(dead_code)]
#[path = "../../plugin/src/protocol/request.rs"]
mod request;

fuzz_target!(|data: &[u8]| {
    let _ = request::parse::<request::NameReq>("/VolumeDriver.Remove", data);
    let _ = request::parse::<request::MountReq>("/VolumeDriver.Mount", data);
    let _ = request::parse::<serde_json::Value>("/VolumeDriver.List", data);
    if let Ok(r) = request::parse::<request::CreateReq>("/VolumeDriver.Create", data) {
        if options::validate_name(&r.name).is_ok() {
            assert!(r.name.len() <= options::MAX_NAME_LEN);
        }
        options_check::check(r.opts.unwrap_or_default(), "");
    }
});
