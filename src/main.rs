//! The `surgemq` command: flags in, validated configuration out, one library call.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// A message is allocated on the shard that read it and often freed on another (its subscriber's,
/// once acknowledged): mimalloc takes such frees without the lock glibc's arenas need, which
/// made the broker 20-30% faster at 2 shards (perf/results/2026-12-02-mimalloc.md). The
/// library leaves the choice to whoever links it.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator the process's heap really comes from, asked of mimalloc with a fresh block:
/// logged once the broker has started (`cli::serve`) and checked by `tests/cli_serve.rs`, so
/// a build that lost the `#[global_allocator]` line (and the speed above) says "system".
fn allocator_in_use() -> &'static str {
    #[cfg(feature = "mimalloc")]
    {
        let probe = Box::new(0u64);
        // SAFETY: asks only whether the address lies in memory mimalloc manages; `probe` is
        // live for the call.
        let ours =
            unsafe { libmimalloc_sys::mi_is_in_heap_region(std::ptr::from_ref(&*probe).cast()) };
        if ours {
            return "mimalloc";
        }
    }
    "system"
}

#[derive(Parser)]
#[command(
    name = "surgemq",
    version,
    about = "A thread-per-core MQTT 3.1/3.1.1 broker"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it. Given, it also
    /// overrides a mosquitto.conf's `log_type` lines [default: info].
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(cli::serve::ServeArgs),
    /// Create or update a Mosquitto-format password file.
    Passwd(cli::passwd::PasswdArgs),
    /// Publish a message (mosquitto_pub's flags).
    Pub(cli::pub_cmd::PubArgs),
    /// Subscribe and print messages (mosquitto_sub's flags).
    Sub(cli::sub_cmd::SubArgs),
    /// Load-test a broker (pair, fan-in, fan-out, mesh, shared) or run the sink.
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line naming the flag; clap's usage block after it is noise for a typo.
            // Clap's first paragraph, on one line: for a missing argument the flag is on the
            // line after "the following required arguments were not provided:".
            let rendered = e.to_string();
            let first: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("surgemq: {}", first.join(" ").trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(), // --help, --version
    };
    // `pub -d` / `sub -d` log every packet, as mosquitto's tools do with -d.
    let log_level = match &cli.command {
        Command::Pub(a) if a.connect.debug => Some("debug"),
        Command::Sub(a) if a.connect.debug => Some("debug"),
        _ => cli.log_level.as_deref(),
    };
    cli::init_logging(log_level);
    let result = match cli.command {
        Command::Serve(args) => cli::serve::run(args),
        Command::Passwd(args) => cli::passwd::run(args),
        Command::Pub(args) => cli::pub_cmd::run(args),
        Command::Sub(args) => cli::sub_cmd::run(args),
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
