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

use std::sync::OnceLock;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The log filter, which a configuration file may change once it is read, and what set it on
/// the command line (`--log-level` or RUST_LOG), if anything did.
static LOG_FILTER: OnceLock<(reload::Handle<EnvFilter, Registry>, Option<&'static str>)> =
    OnceLock::new();

/// Logs to standard error at `level` (`--log-level`; None: info), or as RUST_LOG says.
pub fn init_logging(level: Option<&str>) {
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let set_by = match (&from_env, level) {
        (Some(_), _) => Some("RUST_LOG"),
        (None, Some(_)) => Some("--log-level"),
        (None, None) => None,
    };
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(level.unwrap_or("info")));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    let _ = LOG_FILTER.set((handle, set_by));
}

/// What set the log level on the command line (`--log-level`, RUST_LOG), which a
/// configuration file's level does not override.
pub fn log_level_set_by() -> Option<&'static str> {
    LOG_FILTER.get().and_then(|(_, by)| *by)
}

/// Logs at `level` from now on (a configuration file's choice; see [`log_level_set_by`]).
pub fn set_log_level(level: LevelFilter) -> Result<(), String> {
    let Some((handle, _)) = LOG_FILTER.get() else {
        return Ok(());
    };
    let filter = EnvFilter::new(level.to_string().to_lowercase());
    handle
        .reload(filter)
        .map_err(|e| format!("cannot change the log level: {e}"))
}
