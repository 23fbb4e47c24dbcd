//! Subcommands of the `surgemq` binary. Each turns its flags into a validated configuration and
//! calls the library; errors come back as one line for the user.

pub mod bench;
pub mod client_args;
pub mod config_file;
pub mod mosquitto_conf;
pub mod passwd;
pub mod pub_cmd;
pub mod serve;
pub mod sub_cmd;

pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
