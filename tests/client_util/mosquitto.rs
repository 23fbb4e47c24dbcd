//! Starts a Debian `mosquitto` for a test: a free loopback port, a generated minimal config
//! in a temporary directory, and a guard that kills the process when dropped (also when the
//! test panics).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mosquitto {
    child: Child,
    dir: PathBuf,
    pub addr: SocketAddr,
}

impl Mosquitto {
    /// Anonymous clients allowed.
    pub fn start() -> Mosquitto {
        Mosquitto::start_with("allow_anonymous true\n")
    }

    /// `extra` is appended to the config after the listener line.
    pub fn start_with(extra: &str) -> Mosquitto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Mosquitto::start_on(port, extra)
    }

    /// [`start_with`](Self::start_with) on a given port (e.g. to start it again where a
    /// bridge expects it).
    pub fn start_on(port: u16, extra: &str) -> Mosquitto {
        let dir =
            std::env::temp_dir().join(format!("surgemq-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = format!("listener {port} 127.0.0.1\n{extra}");
        // Mosquitto drops root privileges to user "mosquitto" unless told otherwise.
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            config.push_str("user root\n");
        }
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (apt-get install mosquitto)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "mosquitto did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Mosquitto { child, dir, addr }
    }

    /// Sends `signal` to the process (e.g. `libc::SIGUSR1`: write the persistence file).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; the child is not reaped before drop.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.child.id());
    }

    /// SIGKILL, and waits until the process is gone (what dropping does, said aloud).
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
