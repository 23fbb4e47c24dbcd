//! `surgemq passwd`: create and update Mosquitto-format password files, like
//! `mosquitto_passwd` (the files work with both brokers).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;
use surgemq::auth::PasswordFile;

#[derive(Args, Debug)]
pub struct PasswdArgs {
    /// Create a new file, replacing an existing one.
    #[arg(short = 'c')]
    create: bool,
    /// Delete USER instead of setting a password.
    #[arg(short = 'D', conflicts_with = "create")]
    delete: bool,
    /// Take the password from the command line (otherwise: prompt, or one line of stdin).
    #[arg(short = 'b')]
    batch: bool,
    /// Password file.
    file: PathBuf,
    /// User name.
    user: String,
    /// Password (with -b).
    password: Option<String>,
}

pub fn run(args: PasswdArgs) -> Result<(), String> {
    let mut file = if args.create {
        PasswordFile::default()
    } else {
        PasswordFile::load(&args.file).map_err(|e| e.to_string())?
    };
    if args.delete {
        if !file.remove(&args.user) {
            return Err(format!(
                "user {} is not in {}",
                args.user,
                args.file.display()
            ));
        }
    } else {
        let password = match (args.batch, args.password) {
            (true, Some(p)) => p,
            (true, None) => return Err("-b needs the password as the last argument".into()),
            (false, Some(_)) => return Err("a password on the command line needs -b".into()),
            (false, None) => read_password()?,
        };
        file.set(&args.user, password.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    write_private(&args.file, &file.to_text())
}

/// Prompts twice without echo on a terminal; otherwise reads one line from stdin.
fn read_password() -> Result<String, String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = prompt_hidden("Password: ")?;
    let second = prompt_hidden("Reenter password: ")?;
    if first != second {
        return Err("passwords do not match".into());
    }
    Ok(first)
}

fn prompt_hidden(prompt: &str) -> Result<String, String> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let fd = libc::STDIN_FILENO;
    // SAFETY: tcgetattr/tcsetattr on stdin with a termios struct we own; echo is restored below.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err("cannot read the terminal settings".into());
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        libc::tcsetattr(fd, libc::TCSANOW, &t);
        saved
    };
    let mut line = String::new();
    let result = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    eprintln!();
    result.map_err(|e| e.to_string())?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Password hashes are secrets: the file is readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
