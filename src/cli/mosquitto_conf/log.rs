//! `log_dest` and `log_type`. SurgeMQ logs with `tracing` to its standard error, set up
//! before the configuration file is read; `log_dest` moves that stream: `file PATH` appends
//! to the file (re-opened on SIGHUP, for logrotate), `stdout` sends it to standard output,
//! `none` to /dev/null. `syslog`, `topic` and `dlt` are not SurgeMQ destinations: a warning
//! says so and the log stays on standard error (which the systemd journal collects). The log
//! level is `--log-level` (or RUST_LOG); a `log_type` asking for another one gets a warning
//! naming the flag.

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

/// What `log_dest` and `log_type` lines asked for.
#[derive(Debug, Clone, Default)]
pub struct Logging {
    stderr: Option<At>,
    stdout: Option<At>,
    file: Option<Set<PathBuf>>,
    none: Option<At>,
    /// The most detailed level a `log_type` asked for, and the last such line.
    level: Option<Set<LevelFilter>>,
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
                    level: self.level.take(),
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

    /// Reads a `log_type` line (several may be given; the most detailed one counts).
    pub fn log_type(&mut self, line: &Line<'_>) -> Result<(), String> {
        let level = match line.choice(&[
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
        ])? {
            "none" => LevelFilter::OFF,
            "error" => LevelFilter::ERROR,
            "warning" => LevelFilter::WARN,
            "notice" | "information" => LevelFilter::INFO,
            _ => LevelFilter::DEBUG,
        };
        let level = self.level.as_ref().map_or(level, |l| l.value.max(level));
        self.level = Some(Set {
            value: level,
            at: line.at.clone(),
        });
        Ok(())
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

    /// A warning when `log_type` asks for another level than the one in effect.
    pub fn level_warning(&self, current: LevelFilter) -> Option<String> {
        let wanted = self.level.as_ref()?;
        if wanted.value == current {
            return None;
        }
        let flag = match wanted.value.into_level() {
            None => "off".to_string(),
            Some(level) => level.to_string().to_lowercase(),
        };
        Some(format!(
            "{}: `log_type` asks for the {} level, but the log level was set to {} before the file was read: pass --log-level {flag} (or set RUST_LOG)",
            wanted.at,
            flag,
            current.to_string().to_lowercase(),
        ))
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
        let mut l = Logging::default();
        assert_eq!(l.level_warning(LevelFilter::INFO), None);
        l.log_type(&line("log_type error", 1)).unwrap();
        l.log_type(&line("log_type information", 2)).unwrap();
        assert_eq!(l.level_warning(LevelFilter::INFO), None);
        l.log_type(&line("log_type all", 3)).unwrap();
        assert_eq!(
            l.level_warning(LevelFilter::INFO).unwrap(),
            "log.conf:3: `log_type` asks for the debug level, but the log level was set to info before the file was read: pass --log-level debug (or set RUST_LOG)"
        );
        assert!(l.log_type(&line("log_type loud", 4)).is_err());
    }
}
