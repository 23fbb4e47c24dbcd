//! One line of a Mosquitto configuration file: its option name, its value, and where it was
//! read (`file:line`), with the value parsers every option uses. Every error is one line that
//! starts with the place, e.g. `mosquitto.conf:12: `port` must be an integer between 1 and
//! 65535, got `http``.

use std::fmt;
use std::path::PathBuf;

/// Where a line was read: shown as `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// An option line: `key` is the first word, `rest` what follows it (trimmed).
#[derive(Debug, Clone)]
pub struct Line<'a> {
    pub key: &'a str,
    pub rest: &'a str,
    pub at: At,
}

impl<'a> Line<'a> {
    /// Splits a line into option and value; None for blank lines and comments. Mosquitto
    /// treats only a `#` in the first column as a comment; indented ones are comments here
    /// too, and tabs separate words as spaces do.
    pub fn parse(text: &'a str, at: At) -> Option<Line<'a>> {
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            return None;
        }
        let (key, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        Some(Line {
            key,
            rest: rest.trim(),
            at,
        })
    }

    /// An error about this line.
    pub fn err(&self, message: impl fmt::Display) -> String {
        format!("{}: {message}", self.at)
    }

    /// The value's words, up to a word starting with `#` (a trailing comment).
    pub fn words(&self) -> Vec<&'a str> {
        self.rest
            .split_whitespace()
            .take_while(|w| !w.starts_with('#'))
            .collect()
    }

    /// A value of one word.
    pub fn word(&self) -> Result<&'a str, String> {
        match self.words()[..] {
            [] => Err(self.err(format_args!("`{}` needs a value", self.key))),
            [one] => Ok(one),
            _ => Err(self.err(format_args!(
                "`{}` takes one value, got `{}`",
                self.key, self.rest
            ))),
        }
    }

    /// The rest of the line as it is (a path or a name may hold spaces), as Mosquitto reads
    /// string options.
    pub fn text(&self) -> Result<&'a str, String> {
        if self.rest.is_empty() {
            return Err(self.err(format_args!("`{}` needs a value", self.key)));
        }
        Ok(self.rest)
    }

    /// A path, as written: relative paths are relative to the working directory, as in
    /// Mosquitto.
    pub fn path(&self) -> Result<PathBuf, String> {
        self.text().map(PathBuf::from)
    }

    /// `true`/`false` (or `1`/`0`, which Mosquitto also takes).
    pub fn bool(&self) -> Result<bool, String> {
        match self.word()? {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(self.err(format_args!(
                "`{}` must be true or false, got `{other}`",
                self.key
            ))),
        }
    }

    /// An integer from `min` to `max`.
    pub fn int(&self, min: i64, max: i64) -> Result<i64, String> {
        let word = self.word()?;
        match word.parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(self.err(format_args!(
                "`{}` must be an integer from {min} to {max}, got `{word}`",
                self.key
            ))),
        }
    }

    /// One of `allowed`.
    pub fn choice(&self, allowed: &[&'static str]) -> Result<&'static str, String> {
        let word = self.word()?;
        allowed.iter().copied().find(|a| *a == word).ok_or_else(|| {
            self.err(format_args!(
                "`{}` must be one of {}, got `{word}`",
                self.key,
                allowed.join(", ")
            ))
        })
    }

    /// The error for an option SurgeMQ does not implement and cannot ignore safely.
    pub fn refuse(&self, reason: &str) -> String {
        self.err(format_args!("`{}` is not supported: {reason}", self.key))
    }

    /// The warning for an option that is read and ignored.
    pub fn ignored(&self, reason: &str) -> String {
        self.err(format_args!("`{}` is ignored: {reason}", self.key))
    }
}

/// A value and the line that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set<T> {
    pub value: T,
    pub at: At,
}

/// Sets `slot` once: a second value is an error naming both lines, as Mosquitto refuses
/// duplicate string options.
pub fn set_once<T>(slot: &mut Option<Set<T>>, line: &Line<'_>, value: T) -> Result<(), String> {
    if let Some(first) = slot {
        return Err(line.err(format_args!(
            "`{}` given twice (first at {})",
            line.key, first.at
        )));
    }
    *slot = Some(Set {
        value,
        at: line.at.clone(),
    });
    Ok(())
}

/// Sets `slot`, the last value winning (Mosquitto's rule for numbers and booleans).
pub fn set<T>(slot: &mut Option<Set<T>>, line: &Line<'_>, value: T) {
    *slot = Some(Set {
        value,
        at: line.at.clone(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Line<'_> {
        Line::parse(
            text,
            At {
                file: "m.conf".into(),
                line: 7,
            },
        )
        .unwrap()
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let at = At {
            file: "m.conf".into(),
            line: 1,
        };
        assert!(Line::parse("# port 1", at.clone()).is_none());
        assert!(Line::parse("   # indented", at.clone()).is_none());
        assert!(Line::parse(" \t\r", at).is_none());
        let l = line("  port\t1883   # the usual one");
        assert_eq!((l.key, l.word().unwrap()), ("port", "1883"));
    }

    #[test]
    fn values_and_their_errors() {
        assert_eq!(
            line("password_file /etc/a b/pw").path().unwrap(),
            PathBuf::from("/etc/a b/pw")
        );
        assert!(line("persistence 1").bool().unwrap());
        assert_eq!(
            line("persistence yes").bool().unwrap_err(),
            "m.conf:7: `persistence` must be true or false, got `yes`"
        );
        assert_eq!(
            line("port 70000").int(1, 65535).unwrap_err(),
            "m.conf:7: `port` must be an integer from 1 to 65535, got `70000`"
        );
        assert_eq!(
            line("port 1 2").int(1, 65535).unwrap_err(),
            "m.conf:7: `port` takes one value, got `1 2`"
        );
        assert_eq!(
            line("port").word().unwrap_err(),
            "m.conf:7: `port` needs a value"
        );
        assert_eq!(
            line("protocol mqttsn")
                .choice(&["mqtt", "websockets"])
                .unwrap_err(),
            "m.conf:7: `protocol` must be one of mqtt, websockets, got `mqttsn`"
        );
    }

    #[test]
    fn string_options_are_set_once() {
        let mut slot = None;
        set_once(&mut slot, &line("acl_file a"), 1).unwrap();
        let mut second = line("acl_file b");
        second.at.line = 9;
        assert_eq!(
            set_once(&mut slot, &second, 2).unwrap_err(),
            "m.conf:9: `acl_file` given twice (first at m.conf:7)"
        );
    }
}
