//! `log_dest` and `log_type`. SurgeMQ logs with `tracing` to its standard error, set up
//! before the configuration file is read; `log_dest` moves that stream: `file PATH` appends
//! to the file (re-opened on SIGHUP, for logrotate), `stdout` sends it to standard output,
//! `none` to /dev/null. `syslog`, `topic` and `dlt` are not SurgeMQ destinations: a warning
//! says so and the log stays on standard error (which the systemd journal collects).
//!
//! `log_type` lines choose the log level, unless `--log-level` or RUST_LOG set one (those
//! win, with a warning naming the line). Mosquitto reads them as a set of message types: the
//! first line replaces its default set (error, warning, notice, information), each further
//! line adds a type, `none` empties the set and `all` fills it. SurgeMQ's log has levels, not
//! types, so the set becomes the most detailed level it holds: `debug` (or `all`) is the
//! debug level, `information` or `notice` info, `warning` warn, `error` error, and a set
//! without any of these (`none`) turns the log off. What a level cannot say:
//! - a set with a gap, such as `error` + `information` without `warning`: the level logs
//!   everything up to its detail (warnings too);
//! - `subscribe` and `unsubscribe`: SurgeMQ does not log each subscription (refused ones are
//!   logged at the debug level), so these types add nothing;
//! - `websockets` (libwebsockets' own messages): SurgeMQ's WebSocket transport logs with the
//!   rest of the broker, so this type adds nothing either.
//!
//! The last three get one warning, naming the first such line.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use tracing::level_filters::LevelFilter;

use super::line::{At, Line, Set};

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stderr,
    Stdout,
    File(PathBuf),
    Nowhere,
}

/// Mosquitto's message types that a level can carry.
const ERROR: u8 = 1;
const WARNING: u8 = 2;
const NOTICE: u8 = 4;
const INFORMATION: u8 = 8;
const DEBUG: u8 = 16;

/// What `log_dest` and `log_type` lines asked for.
#[derive(Debug, Clone, Default)]
pub struct Logging {
    stderr: Option<At>,
    stdout: Option<At>,
    file: Option<Set<PathBuf>>,
    none: Option<At>,
    /// The message types `log_type` lines chose (bits: [`ERROR`] ...), and the last such
    /// line; None when there is none (Mosquitto's default set).
    types: Option<Set<u8>>,
    /// `log_type subscribe`, `unsubscribe` or `websockets` lines still in the set: the first
    /// one, and the types named.
    unmapped: Option<(At, Vec<&'static str>)>,
}

impl Logging {
    /// Reads a `log_dest` line; Some(warning) for destinations SurgeMQ does not have.
    pub fn dest(&mut self, line: &Line<'_>) -> Result<Option<String>, String> {
        let words = line.words();
        let dest = words
            .first()
            .ok_or_else(|| line.err("`log_dest` needs a value"))?;
        if *dest != "file" && words.len() > 1 {
            return Err(line.err(format_args!(
                "`log_dest {dest}` takes no more words, got `{}`",
                line.rest
            )));
        }
        let at = Some(line.at.clone());
        match *dest {
            "stderr" => self.stderr = at,
            "stdout" => self.stdout = at,
            "none" => {
                // As in Mosquitto: `none` forgets the destinations before it.
                *self = Logging {
                    none: at,
                    types: self.types.take(),
                    unmapped: self.unmapped.take(),
                    ..Logging::default()
                }
            }
            "file" => {
                let path = line.rest["file".len()..].trim();
                if path.is_empty() {
                    return Err(line.err("`log_dest file` needs a path"));
                }
                if let Some(first) = &self.file {
                    return Err(line.err(format_args!("only one `log_dest file` may be given (first at {})", first.at)));
                }
                self.file = Some(Set {
                    value: PathBuf::from(path),
                    at: line.at.clone(),
                });
            }
            "syslog" => {
                return Ok(Some(line.err(
                    "`log_dest syslog` is ignored: SurgeMQ logs to standard error, which the systemd journal collects (and passes to syslog when it is set up to)",
                )))
            }
            "topic" => return Ok(Some(line.err("`log_dest topic` is ignored: SurgeMQ does not publish its log under $SYS/broker/log"))),
            "dlt" => return Ok(Some(line.err("`log_dest dlt` is ignored: SurgeMQ has no DLT support"))),
            other => {
                return Err(line.err(format_args!(
                    "`log_dest` must be one of stderr, stdout, file PATH, syslog, topic, dlt, none, got `{other}`"
                )))
            }
        }
        Ok(None)
    }

    /// Reads a `log_type` line (see the module docs for what a set of them means).
    pub fn log_type(&mut self, line: &Line<'_>) -> Result<(), String> {
        let word = line.choice(&[
            "debug",
            "error",
            "warning",
            "notice",
            "information",
            "subscribe",
            "unsubscribe",
            "websockets",
            "none",
            "all",
        ])?;
        // The first line replaces Mosquitto's default set.
        let types = self.types.as_ref().map_or(0, |t| t.value);
        let types = match word {
            "none" => {
                self.unmapped = None;
                0
            }
            "all" => ERROR | WARNING | NOTICE | INFORMATION | DEBUG,
            "error" => types | ERROR,
            "warning" => types | WARNING,
            "notice" => types | NOTICE,
            "information" => types | INFORMATION,
            "debug" => types | DEBUG,
            // subscribe, unsubscribe, websockets: nothing a level can carry.
            other => {
                let (_, names) = self
                    .unmapped
                    .get_or_insert_with(|| (line.at.clone(), Vec::new()));
                let name = ["subscribe", "unsubscribe", "websockets"]
                    .into_iter()
                    .find(|n| *n == other)
                    .expect("one of the choices");
                if !names.contains(&name) {
                    names.push(name);
                }
                types
            }
        };
        self.types = Some(Set {
            value: types,
            at: line.at.clone(),
        });
        Ok(())
    }

    /// The log level the `log_type` lines come to, and the last of them; None without any.
    pub fn level(&self) -> Option<(LevelFilter, &At)> {
        let types = self.types.as_ref()?;
        let level = match types.value {
            t if t & DEBUG != 0 => LevelFilter::DEBUG,
            t if t & (INFORMATION | NOTICE) != 0 => LevelFilter::INFO,
            t if t & WARNING != 0 => LevelFilter::WARN,
            t if t & ERROR != 0 => LevelFilter::ERROR,
            _ => LevelFilter::OFF,
        };
        Some((level, &types.at))
    }

    /// One warning for the `log_type` types SurgeMQ's log has no equivalent of.
    pub fn unmapped_warning(&self) -> Option<String> {
        let (at, names) = self.unmapped.as_ref()?;
        let names: Vec<String> = names.iter().map(|n| format!("`log_type {n}`")).collect();
        Some(format!(
            "{at}: {} add nothing to the log: SurgeMQ does not log each subscription or unsubscription (refused ones are logged at the debug level), and logs WebSocket connections with the rest of the broker",
            names.join(", ")
        ))
    }

    /// The level to log at once the file's warnings are out (None: keep the current one),
    /// and a warning when `set_by` (`--log-level`, RUST_LOG) set another level, which wins.
    pub fn level_to_apply(
        &self,
        set_by: Option<&str>,
        current: LevelFilter,
    ) -> (Option<LevelFilter>, Option<String>) {
        let Some((wanted, at)) = self.level() else {
            return (None, None);
        };
        let Some(by) = set_by else {
            return (Some(wanted), None);
        };
        if wanted == current {
            return (None, None);
        }
        let name = |l: LevelFilter| l.to_string().to_lowercase();
        (
            None,
            Some(format!(
                "{at}: `log_type` asks for the {} level, but {by} sets {} and wins",
                name(wanted),
                name(current)
            )),
        )
    }

    /// The destination, and warnings for those dropped: SurgeMQ writes to one (a file before
    /// standard output before standard error).
    pub fn target(&self) -> (Option<Target>, Vec<String>) {
        let mut warnings = Vec::new();
        let mut dropped = |at: &Option<At>, what: &str, to: &str| {
            if let Some(at) = at {
                warnings.push(format!(
                    "{at}: `log_dest {what}` is ignored: SurgeMQ logs to one destination, {to}"
                ));
            }
        };
        let target = if let Some(file) = &self.file {
            let to = format!("the file {}", file.value.display());
            dropped(&self.stdout, "stdout", &to);
            dropped(&self.stderr, "stderr", &to);
            Some(Target::File(file.value.clone()))
        } else if self.stdout.is_some() {
            dropped(&self.stderr, "stderr", "standard output");
            Some(Target::Stdout)
        } else if self.stderr.is_some() {
            Some(Target::Stderr)
        } else if self.none.is_some() {
            Some(Target::Nowhere)
        } else {
            None
        };
        (target, warnings)
    }
}

/// The log stream moved to its destination; keeps the original standard error to give it
/// back if the start fails.
pub struct Redirect {
    target: Target,
    original: OwnedFd,
}

impl Redirect {
    pub fn apply(target: Target) -> Result<Redirect, String> {
        // SAFETY: dup(2) of our standard error; the new descriptor is owned below.
        let saved = unsafe { libc::dup(libc::STDERR_FILENO) };
        if saved < 0 {
            return Err(format!(
                "cannot keep standard error: {}",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: `saved` is a fresh descriptor nothing else owns.
        let original = unsafe { OwnedFd::from_raw_fd(saved) };
        let redirect = Redirect { target, original };
        redirect.point().map_err(|e| match &redirect.target {
            Target::File(path) => format!("log_dest file {}: {e}", path.display()),
            _ => format!("log_dest: {e}"),
        })?;
        Ok(redirect)
    }

    /// Points standard error at the target (again: a rotated log file is opened anew).
    pub fn point(&self) -> io::Result<()> {
        let file = match &self.target {
            Target::Stderr => return Ok(()),
            Target::Stdout => return dup_onto_stderr(libc::STDOUT_FILENO),
            Target::File(path) => OpenOptions::new().create(true).append(true).open(path)?,
            Target::Nowhere => File::options().write(true).open("/dev/null")?,
        };
        dup_onto_stderr(file.as_raw_fd())
    }

    /// Gives the original standard error back, for an error message the user must see.
    pub fn restore(&self) {
        let _ = dup_onto_stderr(self.original.as_raw_fd());
    }

    pub fn is_file(&self) -> bool {
        matches!(self.target, Target::File(_))
    }
}

fn dup_onto_stderr(fd: i32) -> io::Result<()> {
    // SAFETY: dup2 onto fd 2 with a descriptor we hold open.
    if unsafe { libc::dup2(fd, libc::STDERR_FILENO) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, n: usize) -> Line<'_> {
        Line::parse(
            text,
            At {
                file: "log.conf".into(),
                line: n,
            },
        )
        .unwrap()
    }

    #[test]
    fn destinations() {
        let mut l = Logging::default();
        assert_eq!(l.target().0, None);
        l.dest(&line("log_dest stderr", 1)).unwrap();
        assert_eq!(l.target().0, Some(Target::Stderr));
        l.dest(&line("log_dest file /var/log/m q.log", 2)).unwrap();
        let (target, warnings) = l.target();
        assert_eq!(target, Some(Target::File("/var/log/m q.log".into())));
        assert_eq!(
            warnings,
            ["log.conf:1: `log_dest stderr` is ignored: SurgeMQ logs to one destination, the file /var/log/m q.log"]
        );
        assert_eq!(
            l.dest(&line("log_dest file /x", 3)).unwrap_err(),
            "log.conf:3: only one `log_dest file` may be given (first at log.conf:2)"
        );
        l.dest(&line("log_dest none", 4)).unwrap();
        assert_eq!(l.target().0, Some(Target::Nowhere));
        l.dest(&line("log_dest stdout", 5)).unwrap();
        assert_eq!(l.target(), (Some(Target::Stdout), vec![]));
        assert_eq!(
            l.dest(&line("log_dest syslog", 6)).unwrap().unwrap(),
            "log.conf:6: `log_dest syslog` is ignored: SurgeMQ logs to standard error, which the systemd journal collects (and passes to syslog when it is set up to)"
        );
        assert!(l.dest(&line("log_dest topic", 7)).unwrap().is_some());
        assert_eq!(
            l.dest(&line("log_dest printer", 8)).unwrap_err(),
            "log.conf:8: `log_dest` must be one of stderr, stdout, file PATH, syslog, topic, dlt, none, got `printer`"
        );
        assert_eq!(
            l.dest(&line("log_dest file", 9)).unwrap_err(),
            "log.conf:9: `log_dest file` needs a path"
        );
    }

    #[test]
    fn log_types_pick_a_level() {
        let level = |lines: &[&str]| {
            let mut l = Logging::default();
            for (i, text) in lines.iter().enumerate() {
                l.log_type(&line(text, i + 1)).unwrap();
            }
            l.level().map(|(level, at)| (level, at.line))
        };
        assert_eq!(
            level(&[]),
            None,
            "Mosquitto's default: the current level stays"
        );
        assert_eq!(level(&["log_type error"]), Some((LevelFilter::ERROR, 1)));
        assert_eq!(
            level(&["log_type error", "log_type warning"]),
            Some((LevelFilter::WARN, 2))
        );
        for info in ["log_type information", "log_type notice"] {
            assert_eq!(
                level(&["log_type error", info]),
                Some((LevelFilter::INFO, 2))
            );
        }
        assert_eq!(level(&["log_type debug"]), Some((LevelFilter::DEBUG, 1)));
        assert_eq!(level(&["log_type all"]), Some((LevelFilter::DEBUG, 1)));
        assert_eq!(level(&["log_type none"]), Some((LevelFilter::OFF, 1)));
        // `none` empties the set; later lines add to it again.
        assert_eq!(
            level(&["log_type all", "log_type none", "log_type warning"]),
            Some((LevelFilter::WARN, 3))
        );
        // Types a level cannot carry leave it where the others put it.
        assert_eq!(
            level(&["log_type subscribe", "log_type unsubscribe"]),
            Some((LevelFilter::OFF, 2))
        );
        assert_eq!(
            level(&["log_type warning", "log_type websockets"]),
            Some((LevelFilter::WARN, 2))
        );
        let mut l = Logging::default();
        assert!(l.log_type(&line("log_type loud", 1)).is_err());
    }

    #[test]
    fn unmapped_log_types_get_one_warning() {
        let mut l = Logging::default();
        assert_eq!(l.unmapped_warning(), None);
        for (i, text) in [
            "log_type information",
            "log_type subscribe",
            "log_type unsubscribe",
            "log_type subscribe",
            "log_type websockets",
        ]
        .iter()
        .enumerate()
        {
            l.log_type(&line(text, i + 1)).unwrap();
        }
        assert_eq!(
            l.unmapped_warning().unwrap(),
            "log.conf:2: `log_type subscribe`, `log_type unsubscribe`, `log_type websockets` add nothing to the log: SurgeMQ does not log each subscription or unsubscription (refused ones are logged at the debug level), and logs WebSocket connections with the rest of the broker"
        );
        l.log_type(&line("log_type none", 6)).unwrap();
        assert_eq!(l.unmapped_warning(), None, "`none` forgets them");
    }

    #[test]
    fn the_command_line_level_wins() {
        let mut l = Logging::default();
        assert_eq!(l.level_to_apply(None, LevelFilter::INFO), (None, None));
        l.log_type(&line("log_type error", 1)).unwrap();
        assert_eq!(
            l.level_to_apply(None, LevelFilter::INFO),
            (Some(LevelFilter::ERROR), None)
        );
        assert_eq!(
            l.level_to_apply(Some("--log-level"), LevelFilter::DEBUG),
            (
                None,
                Some(
                    "log.conf:1: `log_type` asks for the error level, but --log-level sets debug and wins"
                        .into()
                )
            )
        );
        assert_eq!(
            l.level_to_apply(Some("RUST_LOG"), LevelFilter::ERROR),
            (None, None)
        );
    }
}
