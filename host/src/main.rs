//! The `wasmtap` binary: parse the command line, start logging, turn the process's signals
//! into the app's control signals, run the app. The pipeline is described in the library's
//! docs (`lib.rs`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use host::app::Signal;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
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
