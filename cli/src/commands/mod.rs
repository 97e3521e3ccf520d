//! One module per subcommand.

pub mod bench;
mod chat;
mod common;
mod configs;
mod data;
mod eval;
mod inspect;
mod merge;
mod parity;
mod plugins;
mod serve;
mod supported_models;
mod train;

use crate::args::{Command, PluginsCommand};
use std::process::ExitCode;

pub fn run(command: Command, verbose: u8) -> anyhow::Result<ExitCode> {
    match command {
        Command::SupportedModels(args) => supported_models::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Parity(args) => parity::run(&args, verbose > 0),
        Command::Merge(args) => merge::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Chat(args) => chat::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Configs(c) => configs::run(&c),
        Command::Data(args) => data::run(&args),
        Command::Plugins(PluginsCommand::List(args)) => plugins::run(&args),
    }
}
