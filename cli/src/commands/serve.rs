//! `lmms serve`: checks the bind address and token rules, then runs the web UI
//! (`crate::serve`) until Ctrl-C.

use crate::args::ServeArgs;
use crate::serve::{Config, access};
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let host = access::parse_host(&args.host).map_err(anyhow::Error::msg)?;
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("LMMS_SERVE_TOKEN").ok())
        .filter(|t| !t.is_empty());
    access::check_bind(host, token.as_deref()).map_err(anyhow::Error::msg)?;
    crate::serve::run(Config {
        host,
        port: args.port,
        workspace: args.workspace.clone().unwrap_or_else(|| PathBuf::from(".")),
        token,
    })?;
    Ok(ExitCode::SUCCESS)
}
