//! Generates the gRPC code and the descriptor set served by reflection, and
//! finds out which of the tools some tests need this machine has.
//!
//! protox compiles the .proto files in pure Rust, so building needs no system
//! `protoc`. The descriptor set includes the imported well-known types
//! (google/protobuf/timestamp.proto) so reflection clients can resolve them.
//!
//! Tests that need a program of the machine (grpcurl, PostgreSQL,
//! Prometheus, root to mount filesystems) are marked `#[cfg_attr(missing_X, ignore = "why")]`:
//! where the program is missing, `cargo test` lists them as ignored with the
//! reason instead of passing them silently. Under CI (`CI` set) nothing is
//! marked missing, so such a test runs and fails loudly when its program is
//! not there.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/archive/v1/archive.proto";
    println!("cargo:rerun-if-changed={proto}");

    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("archive_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure().compile_fds(descriptors)?;

    probe_test_prerequisites();
    record_git_commit();
    Ok(())
}

/// Sets `ARCHIVE_GIT_COMMIT` to the commit being built, for the
/// `archive_build_info` metric: `unknown` outside a git checkout or
/// without git (a crate tarball), which never fails the build.
fn record_git_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|out| !out.is_empty())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ARCHIVE_GIT_COMMIT={commit}");
    // Build again when HEAD moves: a commit, a checkout. (In a worktree
    // these files are under the main repository's .git.) A file that does
    // not exist (a packed ref) would make every build run this again.
    let mut watched = vec!["HEAD".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(file) = git(&["rev-parse", "--git-path", &name]) {
            if Path::new(&file).is_file() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
}

/// Emits `missing_grpcurl`, `missing_mount`, `missing_postgres` and
/// `missing_prometheus` for what this machine lacks (never under CI).
fn probe_test_prerequisites() {
    let flags = [
        "missing_grpcurl",
        "missing_mount",
        "missing_postgres",
        "missing_prometheus",
    ];
    for flag in flags {
        println!("cargo::rustc-check-cfg=cfg({flag})");
    }
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=PATH");
    let path_dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect())
        .unwrap_or_default();
    // Installing a program changes its directory: probe again then.
    for dir in path_dirs.iter().filter(|dir| dir.is_dir()) {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    if env::var_os("CI").is_some() {
        return;
    }
    let on_path = |program: &str| path_dirs.iter().any(|dir| dir.join(program).is_file());
    if !on_path("grpcurl") {
        println!("cargo:rustc-cfg=missing_grpcurl");
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    let mkfs = on_path("mkfs.ext4") || Path::new("/sbin/mkfs.ext4").is_file();
    if !(root && mkfs) {
        println!("cargo:rustc-cfg=missing_mount");
    }
    let postgres = on_path("initdb")
        || fs::read_dir("/usr/lib/postgresql").is_ok_and(|versions| {
            versions
                .flatten()
                .any(|v| v.path().join("bin/initdb").is_file())
        });
    if !postgres {
        println!("cargo:rustc-cfg=missing_postgres");
    }
    // Debian's `prometheus` package brings both.
    if !(on_path("prometheus") && on_path("promtool")) {
        println!("cargo:rustc-cfg=missing_prometheus");
    }
}
