//! Encrypted backups end to end (SPEC §8): a volume's `backup-encrypt=` and a target's
//! `encrypt-to`, to a directory and to the S3 test server. The stored objects hold none of the
//! plaintext; `sha256sum -c` checks them without a key; a restore needs an identity (and says
//! which ones it tried and how to add one); with it the tree comes back identical, and so it
//! does with stock tools: `age -d -i key.txt ID.tar.zst.age | zstd -d | tar -x`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use age::secrecy::ExposeSecret;
use common::*;

/// A string that must not appear in any stored object, and a file name likewise.
const KNOWN: &str = "voltool-known-plaintext-5c1a9e-the-launch-codes";
const SECRET_NAME: &str = "quarterly-numbers-confidential.txt";

/// A fresh age key pair: (identity file text as `age-keygen` writes it, public key).
fn keypair() -> (String, String) {
    let k = age::x25519::Identity::generate();
    let public = k.to_public().to_string();
    (format!("# created: by tests/encryption.rs\n# public key: {public}\n{}\n", k.to_string().expose_secret()), public)
}

/// A small tree: the known string in a file (several times, and in compressible text), a
/// file named so its name would show in a tar, a subdirectory and modes.
fn populate(root: &Path) {
    std::fs::create_dir_all(root.join("docs/deep")).expect("mkdir");
    std::fs::write(root.join("docs").join(SECRET_NAME), format!("{KNOWN}\n").repeat(500)).expect("write");
    std::fs::write(root.join("docs/deep/readme.txt"), format!("see {KNOWN}\n")).expect("write");
    std::fs::write(root.join("empty"), "").expect("write");
    let noise: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(root.join("noise.bin"), noise).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("docs/deep"), std::fs::Permissions::from_mode(0o750)).expect("chmod");
}

/// Every stored object of backup `id` in `dir`: none may hold the plaintext or a file name.
fn assert_no_plaintext(dir: &Path, id: &str) {
    let mut seen = 0;
    for e in std::fs::read_dir(dir).expect("ls").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(id) {
            continue;
        }
        seen += 1;
        let bytes = std::fs::read(e.path()).expect("read object");
        for needle in [KNOWN, SECRET_NAME, "docs/deep", "noise.bin"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{name} holds {needle:?} in the clear"
            );
        }
    }
    assert_eq!(seen, 3, "three objects of {id} in {}", dir.display());
}

fn objects(id: &str) -> Vec<String> {
    vec![format!("{id}.manifest.json.age"), format!("{id}.tar.zst.age"), format!("{id}.tar.zst.age.sha256")]
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.retain(|n| !n.starts_with('.'));
    v.sort();
    v
}

fn sh(script: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(script).output().expect("sh")
}

fn bash(script: &str) -> std::process::Output {
    Command::new("bash").arg("-c").arg(script).output().expect("bash")
}

/// `sha256sum -c` on the checksum object, in its directory, with no key anywhere.
fn assert_sha256sum_checks(dir: &Path, id: &str) {
    let o = sh(&format!("cd '{}' && sha256sum -c '{id}.tar.zst.age.sha256'", dir.display()));
    assert!(o.status.success(), "sha256sum -c: {}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(&format!("{id}.tar.zst.age: OK")), "{}", stdout(&o));
}

/// With Debian's `age`: `age -d -i key.txt ID.tar.zst.age | zstd -d | tar -x` gives the tree.
fn assert_stock_tools_restore(archive: &Path, key: &str, want: &Path, scratch: &Path) {
    if Command::new("age").arg("--version").output().is_err() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI installs age (deploy/test-env/test.sh)");
        println!("SKIP stock age -d | zstd -d | tar -x: no `age` binary (apt-get install -y age)");
        return;
    }
    let keyfile = scratch.join("key.txt");
    std::fs::write(&keyfile, key).expect("key file");
    let out = scratch.join("stock");
    std::fs::create_dir_all(&out).expect("mkdir");
    let o = bash(&format!(
        "set -o pipefail; age -d -i '{}' '{}' | zstd -d | tar -x -C '{}'",
        keyfile.display(),
        archive.display(),
        out.display()
    ));
    assert!(o.status.success() && o.stderr.is_empty(), "stock age | zstd | tar: {}", stderr(&o));
    assert_same_tree(want, &out);
}

#[test]
fn encrypted_backup_to_a_directory_holds_no_plaintext_and_restores_only_with_the_identity() {
    let d = Daemon::start_with("[backup]\nidentities = [\"backup-key\"]\n", &[]);
    let (key, public) = keypair();
    let o = d.cli(&["volume", "create", "secret", "-o", &format!("backup-encrypt={public}")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = mount(&d, "secret");
    populate(&root);
    let target = d.dir.path().join("backups");
    let t = target.to_str().expect("utf8");
    let b = json(&d.cli(&["backup", "run", "secret", "--target", t, "--json"]));
    let id = b["id"].as_str().expect("id").to_string();
    assert_eq!(b["status"], "complete", "{b}");
    assert_eq!(b["encrypted"], true, "{b}");
    assert_eq!(files_in(&target), objects(&id));
    assert_no_plaintext(&target, &id);
    assert_sha256sum_checks(&target, &id);

    // No identity yet (the secret named in [backup] identities does not exist): refused,
    // saying what was tried and how to add one; nothing is created.
    for args in [vec!["restore", "back", "--from", &id], vec!["backup", "verify", &id]] {
        let o = d.cli(&args);
        assert!(!o.status.success(), "{args:?} without an identity");
        let msg = stderr(&o);
        for want in [
            "none of the configured identities",
            "backup-key (no such secret)",
            "voltool secret add",
            "[backup] identities",
        ] {
            assert!(msg.contains(want), "{args:?}: {want:?} in {msg}");
        }
    }
    assert!(!d.cli(&["volume", "inspect", "back"]).status.success(), "no volume made for a refused restore");

    // With the identity: verify, restore (the tree identical), manifest readable.
    let o = d.cli_stdin(&["secret", "add", "backup-key"], key.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    let v = d.cli(&["backup", "verify", &id]);
    assert!(v.status.success(), "verify with the identity: {}", stderr(&v));
    let r = json(&d.cli(&["restore", "back", "--from", &id, "--json"]));
    assert_eq!(r["verification"], "manifest", "{r}");
    let back = mount(&d, "back");
    assert_same_tree(&root, &back);
    unmount(&d, "back");
    assert!(!d.log().contains(key.lines().last().expect("key line")), "the identity is never logged");

    // From the archive's URL too (the manifest beside it is found by its .age name).
    let url = format!("file://{t}/{id}.tar.zst.age");
    let r = json(&d.cli(&["restore", "back2", "--from", &url, "--json"]));
    assert_eq!(r["verification"], "manifest", "{r}");
    // And from the local file, which the CLI streams with the .age manifest beside it.
    let local = format!("{t}/{id}.tar.zst.age");
    let r = json(&d.cli(&["restore", "back3", "--from", &local, "--json"]));
    assert_eq!(r["verification"], "manifest", "{r}");
    let back3 = mount(&d, "back3");
    assert_same_tree(&root, &back3);
    unmount(&d, "back3");

    let scratch = tempfile::tempdir().expect("tmp");
    assert_stock_tools_restore(&target.join(format!("{id}.tar.zst.age")), &key, &root, scratch.path());
    unmount(&d, "secret");

    // Retention deletes the .age objects (the second backup newer by a second, and verified:
    // the newest verified backup is always kept).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = json(&d.cli(&["backup", "run", "secret", "--target", t, "--verify", "--json"]));
    assert_eq!(second["verify_status"], "ok", "{second}");
    let id2 = second["id"].as_str().expect("id").to_string();
    let p = d.cli(&["backup", "prune", "secret", "--keep", "last=1"]);
    assert!(p.status.success(), "{}", stderr(&p));
    assert_eq!(files_in(&target), objects(&id2), "the older backup's objects are gone");
}

/// The S3 test server of deploy/test-env/test.sh (s3s-fs: objects are plain files under
/// `VOLTOOL_TEST_S3_DATA/BUCKET/KEY`).
struct S3 {
    endpoint: String,
    bucket: String,
    data: PathBuf,
}

fn s3(test: &str) -> Option<S3> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var("VOLTOOL_TEST_S3_ENDPOINT"), var("VOLTOOL_TEST_S3_BUCKET"), var("VOLTOOL_TEST_S3_DATA")) {
        (Some(endpoint), Some(bucket), Some(data)) => Some(S3 { endpoint, bucket, data: data.into() }),
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: CI must provide the S3 server (test.sh)");
            println!("SKIP {test}: no test S3 server (run deploy/test-env/test.sh, or set VOLTOOL_TEST_S3_*)");
            None
        }
    }
}

#[test]
fn encrypted_backup_to_s3_by_the_targets_encrypt_to_and_the_volumes_keys_win() {
    let Some(s3) = s3("encrypted_backup_to_s3_by_the_targets_encrypt_to_and_the_volumes_keys_win") else { return };
    let prefix = format!("t{}-age", std::process::id());
    let (key, public) = keypair();
    let config = format!(
        "[backup]\nidentities = [\"vault-key\"]\n[targets.vault]\nurl = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\npath-style = true\nencrypt-to = [\"{public}\"]\n",
        s3.bucket, s3.endpoint
    );
    let d = Daemon::start_with(&config, &[]);
    let dir = s3.data.join(&s3.bucket).join(&prefix);
    let _cleanup = RemoveDir(dir.clone());
    assert!(d.cli_stdin(&["secret", "add", "vault-key"], key.as_bytes()).status.success());
    assert!(d.cli(&["volume", "create", "s3sec"]).status.success());
    let root = mount(&d, "s3sec");
    populate(&root);
    let b = json(&d.cli(&["backup", "run", "s3sec", "--target", "vault", "--verify", "--json"]));
    let id = b["id"].as_str().expect("id").to_string();
    assert_eq!(
        (&b["status"], &b["encrypted"], &b["verify_status"]),
        (&"complete".into(), &true.into(), &"ok".into()),
        "{b}"
    );
    assert_eq!(files_in(&dir), objects(&id));
    assert_no_plaintext(&dir, &id);
    assert_sha256sum_checks(&dir, &id);
    let r = json(&d.cli(&["restore", "s3back", "--from", &id, "--json"]));
    assert_eq!(r["verification"], "manifest", "{r}");
    let back = mount(&d, "s3back");
    assert_same_tree(&root, &back);
    unmount(&d, "s3back");
    let scratch = tempfile::tempdir().expect("tmp");
    assert_stock_tools_restore(&dir.join(format!("{id}.tar.zst.age")), &key, &root, scratch.path());
    unmount(&d, "s3sec");

    // A volume with keys of its own: they win over the target's, so the vault's identity
    // cannot open its backup.
    let (_, other) = keypair();
    assert!(d.cli(&["volume", "create", "own", "-o", &format!("backup-encrypt={other}")]).status.success());
    let b = json(&d.cli(&["backup", "run", "own", "--target", "vault", "--json"]));
    let own = b["id"].as_str().expect("id");
    assert_eq!(b["encrypted"], true, "{b}");
    let o = d.cli(&["restore", "ownback", "--from", own]);
    assert!(!o.status.success(), "the vault's key must not open a backup made to the volume's own key");
    assert!(stderr(&o).contains("tried: vault-key"), "{}", stderr(&o));

    // A bad key is refused at create, naming it.
    let o = d.cli(&["volume", "create", "bad", "-o", &format!("backup-encrypt={public},age1notakey")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("recipient \"age1notakey\": not a valid age1"), "{}", stderr(&o));
}

/// Removes a directory when dropped (the test's prefix on the S3 server).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An encrypted chain on S3, taken by a host without the private key: `backup cat` of a file
/// from each link and `restore --path` read only the age chunks that hold it (the daemon logs
/// what it fetched), and the chain restores.
#[test]
fn an_encrypted_chain_restores_and_single_files_come_from_the_chunks_that_hold_them() {
    let test = "an_encrypted_chain_restores_and_single_files_come_from_the_chunks_that_hold_them";
    let Some(s3) = s3(test) else { return };
    let prefix = format!("t{}-age-chain", std::process::id());
    let (key, public) = keypair();
    let config = format!(
        "[backup]\nidentities = [\"vault-key\"]\n[targets.vault]\nurl = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\npath-style = true\nencrypt-to = [\"{public}\"]\n",
        s3.bucket, s3.endpoint
    );
    let d = Daemon::start_with(&config, &[]);
    let _cleanup = RemoveDir(s3.data.join(&s3.bucket).join(&prefix));
    assert!(d.cli(&["volume", "create", "chain"]).status.success());
    let root = mount(&d, "chain");
    populate(&root);
    // 16 MiB that does not compress: the archive is that large, a file's frames are not.
    let big = noise(16 << 20, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(root.join("big.bin"), &big).expect("write");
    std::fs::write(root.join("late.txt"), "before\n").expect("write");
    let full = json(&d.cli(&["backup", "run", "chain", "--target", "vault", "--json"]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(root.join("late.txt"), "after\n").expect("write");
    let inc = json(&d.cli(&["backup", "run", "chain", "--target", "vault", "--incremental", "--json"]));
    assert_eq!((&inc["level"], &inc["encrypted"]), (&1.into(), &true.into()), "{inc}");
    let inc_id = inc["id"].as_str().expect("id");
    assert!(full["bytes_out"].as_u64().expect("size") > 16 << 20, "{full}");
    // The incremental was taken without the private key (the host keeps its last manifest in
    // its state dir); reading the backups needs it.
    assert!(d.cli_stdin(&["secret", "add", "vault-key"], key.as_bytes()).status.success());

    // One file from the full link (unchanged since), one from the incremental.
    for (path, want) in [
        (format!("docs/{SECRET_NAME}"), format!("{KNOWN}\n").repeat(500).into_bytes()),
        ("late.txt".to_string(), b"after\n".to_vec()),
    ] {
        let o = d.cli(&["backup", "cat", inc_id, &path]);
        assert!(o.status.success(), "cat {path}: {}", stderr(&o));
        assert_eq!(o.stdout, want, "{path}");
    }
    let fetched: Vec<u64> =
        d.log().lines().filter_map(|l| l.split("fetched=").nth(1)?.split_whitespace().next()?.parse().ok()).collect();
    assert_eq!(fetched.len(), 2, "{}", d.log());
    println!("backup cat of an encrypted chain: fetched {fetched:?} bytes of a 16 MiB archive");
    assert!(fetched.iter().all(|&n| n > 0 && n <= 4 << 20), "fetched {fetched:?} of a 16 MiB archive");

    // Some paths back beside the live ones, and the whole chain into a new volume.
    let r = d.cli(&["restore", "chain", "--from", inc_id, "--path", "docs", "--to", "back"]);
    assert!(r.status.success(), "restore --path: {}", stderr(&r));
    assert_same_tree(&root.join("docs"), &root.join("back/docs"));
    std::fs::remove_dir_all(root.join("back")).expect("rm");
    let r = json(&d.cli(&["restore", "whole", "--from", inc_id, "--json"]));
    assert_eq!(r["verification"], "manifest", "{r}");
    let whole = mount(&d, "whole");
    assert_same_tree(&root, &whole);
    unmount(&d, "whole");
    unmount(&d, "chain");
}
