//! `lmms`: fine-tune vision-language models and chat LLMs, with outputs that Hugging Face
//! transformers and peft load unchanged.

mod args;
mod builtin;
mod commands;
mod plugins;
mod serve;
mod train_args;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `lmms ... | head` should end quietly, as other Unix tools do, not panic on a closed pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = args::Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let result =
        plugins::load_all(&cli.plugins).and_then(|()| commands::run(cli.command, cli.verbose));
    match result {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole cause chain on one line: "cannot read x: No such file".
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LMMS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
