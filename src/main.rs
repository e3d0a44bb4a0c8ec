//! The `pincat` binary: parse the command line, run it, exit with its code.
#![deny(unsafe_code)]

mod app;
mod cli;
mod known;
mod verbs;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    std::process::exit(app::run(cli) as i32);
}
