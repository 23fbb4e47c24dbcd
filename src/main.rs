//! The `surgemq` command: flags in, validated configuration out, one library call.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "surgemq",
    version,
    about = "A thread-per-core MQTT 3.1/3.1.1 broker"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(cli::serve::ServeArgs),
    /// Load-test a broker (pair, fan-in, fan-out, mesh) or run the sink.
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line naming the flag; clap's usage block after it is noise for a typo.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("surgemq: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(), // --help, --version
    };
    cli::init_logging(&cli.log_level);
    let result = match cli.command {
        Command::Serve(args) => cli::serve::run(args),
        Command::Bench(args) => cli::bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("surgemq: {message}");
            ExitCode::FAILURE
        }
    }
}
