//! End-to-end suite against a real dockerd, run in both plugin modes: the managed plugin
//! (`voltool-e2e-PID:latest`, built from the binary under test and installed by this test
//! process with deploy/plugin.sh) and the host service on a legacy socket (started by this
//! test process). Both keep to their own state under /tmp and are removed when the process
//! ends (see harness.rs). `bash deploy/test-env/test.sh` starts dockerd and the test servers.
//!
//! The scenarios: volumes.rs (local and tmpfs volumes), network.rs (NFS, SMB), backups.rs
//! (backups and restores), consistency.rs (consistent backups); each runs once per mode.

mod backups;
mod consistency;
mod harness;
mod network;
mod volumes;

use std::process::Command;
use std::time::{Duration, Instant};

use backups::*;
use consistency::*;
use harness::{Env, Mode, run, text};
use network::*;
use volumes::*;

/// Generates `name::managed` and `name::legacy` tests from one scenario function.
macro_rules! both_modes {
    ($($name:ident => $scenario:ident $(exclusive $ex:tt)?;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn managed() {
                let test = concat!(stringify!($name), "::managed");
                if let Some(env) = both_modes!(@env test, Mode::Managed $(, $ex)?) { $scenario(&env) }
            }
            #[test]
            fn legacy() {
                let test = concat!(stringify!($name), "::legacy");
                if let Some(env) = both_modes!(@env test, Mode::Legacy $(, $ex)?) { $scenario(&env) }
            }
        }
    )*};
    (@env $t:expr, $m:expr) => { harness::env($t, $m) };
    (@env $t:expr, $m:expr, $ex:tt) => { harness::env_exclusive($t, $m) };
}

both_modes! {
    tmpfs_volume_has_hard_size_limit => tmpfs_size_enforced;
    local_volume_shared_between_containers => local_shared;
    twenty_concurrent_containers_one_mount => twenty_concurrent;
    volumes_survive_plugin_restart => survives_restart exclusive (x);
    bad_input_is_refused_and_creates_nothing => bad_input;
    size_limited_local_volume_enforces_and_grows => size_limited_local;
    xfs_volume_grows_while_mounted => xfs_grows_online;
    nfs_volume_shared_through_the_server => nfs_shared;
    network_volume_create_fails_early_with_the_reason => network_create_checks;
    cifs_secret_never_shows => cifs_secret_hidden;
    scheduled_backup_of_container_data_restores_with_tar => scheduled_backup;
    scheduled_backup_to_s3_of_container_data => scheduled_backup_s3;
    seed_recipe_backup_restores_byte_identical => seed_restore;
    restore_test_of_a_backup_runs_its_check => restore_test;
    backups_stay_in_the_suites_own_state => backups_in_own_state;
    consistent_backup_stops_and_restarts_the_containers => consistent_stop;
    killed_daemon_starts_what_it_stopped => killed_while_holding exclusive (x);
    consistent_backup_runs_the_hooks => consistent_hooks;
}

/// Swarm is the engine's, not a plugin mode's: one test, with the host daemon, alone.
#[test]
fn swarm_service_is_scaled_to_zero_and_back() {
    if let Some(env) = harness::env_exclusive("swarm_service_is_scaled_to_zero_and_back", Mode::Legacy) {
        swarm_service(&env)
    }
}

pub(crate) fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub(crate) fn mount_count(env: &Env, v: &str) -> u64 {
    let o = env.voltool(&["volume", "inspect", "--json", v]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    j[0]["Status"]["mount_count"].as_u64().unwrap_or_else(|| panic!("mount_count in {j}"))
}

pub(crate) fn wait_until(what: &str, f: impl FnMut() -> bool) {
    wait_within(Duration::from_secs(10), what, f);
}

pub(crate) fn wait_within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn status(env: &Env, v: &str) -> serde_json::Value {
    let o = env.voltool(&["volume", "inspect", "--json", v]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    j[0]["Status"].clone()
}

pub(crate) fn host_has_cap_sys_resource() -> bool {
    let st = std::fs::read_to_string("/proc/self/status").expect("status");
    let bnd = st.lines().find_map(|l| l.strip_prefix("CapBnd:")).map(str::trim).expect("CapBnd");
    u64::from_str_radix(bnd, 16).map(|b| b >> 24 & 1 == 1).unwrap_or(false)
}

/// The UTC time `secs` from now as the catalog writes it (`2026-12-01T21:31:24Z`), for
/// comparing with `started_at`.
pub(crate) fn utc_in(secs: u32) -> String {
    let o = run(Command::new("date").args(["-u", "-d", &format!("{secs} seconds"), "+%Y-%m-%dT%H:%M:%SZ"]));
    out(&o)
}
