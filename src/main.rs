//! The `hestia` binary: parse the command line and run it. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc gives memory freed after a burst back to the system; how it is tuned, and why, is in
/// `hestia::allocator`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = hestia::cli::Cli::parse();
    if cli.serves() {
        // Before any thread exists: it may replace this process with a tuned copy of itself.
        hestia::allocator::tune_by_reexec();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hestia::cli::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
