//! `fledge`: the command-line front end (the only user of clap) over the `fledge` library.

mod cli;

fn main() {
    std::process::exit(cli::main())
}
