//! The `wasmtap` binary: parse the command line, start logging, turn the process's signals
//! into the app's control signals, run the app. The pipeline is described in the library's
//! docs (`lib.rs`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use host::app::Signal;
use tracing_subscriber::EnvFilter;

/// Allocations from this size up are mapped on their own and given back to the kernel when
/// freed. glibc otherwise raises this threshold to the largest block freed so far (up to
/// 32 MiB), after which such blocks come from the per-thread heaps, and every worker's heap
/// keeps the memory of the largest call it has seen (a 32 MiB error, a 16 MiB list of
/// updates, a scrape's text). Measured on the hostile suite's million-packet replay (two
/// workers, thirteen hostile analyzers), three runs each: a peak RSS of 230–281 MB without it,
/// 185–192 MB with 1 MiB, 208–230 MB with 4 MiB; the synthetic capture's replay took the same
/// CPU within 1%.
const MMAP_THRESHOLD: i32 = 1 << 20;
/// Free memory a heap keeps at its top before giving it back. Fixing the mapping threshold also
/// fixes this one at glibc's 128 KiB, and the capture thread's heap then shrank and grew again
/// with the batches the workers free: 1% more CPU on the synthetic replay, gone with 16 MiB
/// (peak RSS of the million-packet replay 199–212 MB).
const TRIM_THRESHOLD: i32 = 16 << 20;

fn main() -> ExitCode {
    // SAFETY: mallopt only sets parameters of the allocator; it runs first, before any other
    // thread exists, and the values are valid sizes (the first below glibc's maximum, 32 MiB).
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
    let cli = host::cli::Cli::parse();
    let filter = match EnvFilter::try_new(&cli.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: --log {:?}: {e}", cli.log);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match host::app::run(cli, signal) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The next signal: SIGHUP reloads, SIGINT and SIGTERM stop.
async fn signal() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    let wait = |kind| async move {
        match signal(kind) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Signal::Stop("interrupt"),
        () = wait(SignalKind::terminate()) => Signal::Stop("terminate"),
        () = wait(SignalKind::hangup()) => Signal::Reload,
    }
}
