//! Link settings for the `hestia` binary.
//!
//! Relative relocations are packed (`DT_RELR`, glibc ≥ 2.36): the dynamic loader reads about
//! 10 KiB of them at start instead of 0.8 MiB, which otherwise stays resident for the process's
//! life (a sixth of the idle footprint budget). Linkers without the option would fail the link,
//! so it is asked for only on Linux with GNU targets, where Debian 12's binutils and glibc (the
//! image's, and CI's) have it.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
