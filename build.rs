//! Link settings for the `hestia` binary.
//!
//! - Relative relocations are packed (`DT_RELR`, glibc ≥ 2.36): the dynamic loader reads about
//!   10 KiB of them at start instead of 0.8 MiB, which otherwise stays resident for the
//!   process's life (a sixth of the idle footprint budget). Linkers without the option would
//!   fail the link, so it is asked for only on Linux with GNU targets, where Debian 12's binutils
//!   and glibc (the image's, and CI's) have it.
//! - The functions start-up and the warm proxy path run through are laid out together at the
//!   front of the code (`bench/layout.order`, written by `bench/layout`), in release builds for
//!   x86-64 Linux, where Rust links with LLD. The kernel maps a binary's code into memory 64 KiB
//!   around each page first run, so code that start-up touches here and there across 14 MB
//!   used to keep most of it resident; grouped, it keeps about what it runs. A name the list has
//!   and the binary does not (the list went stale) is skipped: the layout is only less compact.

fn main() {
    let var = |name| std::env::var(name).unwrap_or_default();
    let (os, env, arch) = (
        var("CARGO_CFG_TARGET_OS"),
        var("CARGO_CFG_TARGET_ENV"),
        var("CARGO_CFG_TARGET_ARCH"),
    );
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let order = format!("{}/bench/layout.order", var("CARGO_MANIFEST_DIR"));
    let release = var("PROFILE") == "release";
    if os == "linux" && env == "gnu" && arch == "x86_64" && release {
        if std::path::Path::new(&order).exists() {
            println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={order}");
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        } else {
            println!("cargo:warning={order} is missing: the code is laid out in link order");
        }
    }
    println!("cargo:rerun-if-changed=bench/layout.order");
    println!("cargo:rerun-if-changed=build.rs");
}
