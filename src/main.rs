//! The `pincat` binary: parse the command line, run it, exit with its code.
#![deny(unsafe_code)]

mod cli;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    std::process::exit(cli::run(cli) as i32);
}
