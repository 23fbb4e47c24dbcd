//! Writes a valid `--data-dir` directly with the store API, without a broker: N persistent
//! sessions, each subscribed to one filter at QoS 1 with M queued QoS 1 messages, as a broker
//! would leave them had its subscribers been away while messages came in. For measuring how
//! long a start with that much state takes (`scripts/restart-time.sh`).
//!
//!     cargo run --release --example fill_data_dir -- --dir /work/fill --sessions 10000 --messages 100
//!     target/release/surgemq serve --data-dir /work/fill --shards 2
//!     mosquitto_sub -c -i fill-42 -q 1 -t 'fill/42/#' -C 100    # its 100 messages
//!
//! Layout (see `surgemq::broker`'s restore module): `DIR/CURRENT` holds the generation number
//! (1), and `DIR/gen-1/shard-K.log` the logs, one per `--logs` (default 2), sessions dealt out
//! round-robin. Which log holds a session does not matter: a starting broker deals every
//! session to the shard that owns its client id now, whatever shard count wrote the logs.
//!
//! Session i has client id `fill-<i>`, subscribes to `fill/<i>/#` and has messages 1..=M on
//! topic `fill/<i>/t`; each payload is `<i>/<seq>/` padded with `.` to `--size` bytes, so a
//! reader can check the order. The directory must not exist yet or be empty.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use surgemq::protocol::{ByteStr, QoS};
use surgemq::store::{encode_frame, log_path, Record};

#[derive(Parser, Debug)]
#[command(about = "Write a surgemq --data-dir holding persistent sessions with queued messages")]
struct Args {
    /// The data directory to create (must not exist, or be empty).
    #[arg(long)]
    dir: PathBuf,
    /// Persistent sessions.
    #[arg(long, default_value_t = 10_000)]
    sessions: u64,
    /// Queued QoS 1 messages per session.
    #[arg(long, default_value_t = 100)]
    messages: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Log files to spread the sessions over (the shard count of the broker that "wrote" them).
    #[arg(long, default_value_t = 2)]
    logs: usize,
}

/// The generation the directory is written as.
const GENERATION: u64 = 1;

fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.logs == 0 || args.size == 0 {
        return Err("--logs and --size must be above 0".into());
    }
    if args.dir.exists()
        && std::fs::read_dir(&args.dir)
            .map_err(|e| format!("{}: {e}", args.dir.display()))?
            .next()
            .is_some()
    {
        return Err(format!("{} exists and is not empty", args.dir.display()));
    }
    let started = std::time::Instant::now();
    let gen_dir = args.dir.join(format!("gen-{GENERATION}"));
    std::fs::create_dir_all(&gen_dir).map_err(|e| format!("{}: {e}", gen_dir.display()))?;
    let mut logs = (0..args.logs)
        .map(|k| Log::create(&log_path(&gen_dir, k)))
        .collect::<Result<Vec<_>, _>>()?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for i in 0..args.sessions {
        let log = &mut logs[(i % args.logs as u64) as usize];
        // Numbered per log, from 0, as a shard numbers its sessions.
        let session = log.sessions;
        log.sessions += 1;
        log.write(&Record::SessionBegan {
            session,
            client_id: ByteStr::from(format!("fill-{i}")),
            username: None,
        })?;
        log.write(&Record::Subscribed {
            session,
            filter: ByteStr::from(format!("fill/{i}/#")),
            qos: QoS::AtLeastOnce,
            extras: Default::default(),
        })?;
        let topic = ByteStr::from(format!("fill/{i}/t"));
        for seq in 1..=args.messages {
            log.write(&Record::Queued {
                session,
                seq,
                topic: topic.clone(),
                payload: payload(i, seq, args.size),
                qos: QoS::AtLeastOnce,
                retain: false,
                extras: Default::default(),
            })?;
        }
        log.write(&Record::Detached {
            session,
            at_ms: now_ms,
        })?;
    }
    let mut bytes = 0;
    for log in logs {
        bytes += log.finish()?;
    }
    // CURRENT last, synced, as a broker switches generations: until it exists the directory
    // is empty to a broker.
    let current = args.dir.join("CURRENT");
    let write_current = || -> std::io::Result<()> {
        let mut f = File::create(&current)?;
        writeln!(f, "{GENERATION}")?;
        f.sync_all()?;
        File::open(&args.dir)?.sync_all()
    };
    write_current().map_err(|e| format!("{}: {e}", current.display()))?;
    println!(
        "{}: {} sessions x {} messages of {} B = {} messages, {:.1} MiB of logs in {} file(s), written in {:.2} s",
        args.dir.display(),
        args.sessions,
        args.messages,
        args.size,
        args.sessions * args.messages,
        bytes as f64 / (1 << 20) as f64,
        args.logs,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `<session>/<seq>/` padded with dots to `size` bytes (cut if it is longer).
fn payload(session: u64, seq: u64, size: usize) -> Bytes {
    let mut p = format!("{session}/{seq}/").into_bytes();
    p.resize(size, b'.');
    Bytes::from(p)
}

/// One log file being written: framed records through a buffer.
struct Log {
    path: PathBuf,
    out: BufWriter<File>,
    frame: BytesMut,
    body: BytesMut,
    bytes: u64,
    sessions: u64,
}

impl Log {
    fn create(path: &Path) -> Result<Log, String> {
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Log {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            frame: BytesMut::new(),
            body: BytesMut::new(),
            bytes: 0,
            sessions: 0,
        })
    }

    fn write(&mut self, record: &Record) -> Result<(), String> {
        self.body.clear();
        self.frame.clear();
        let kind = record.encode(&mut self.body);
        encode_frame(&mut self.frame, kind, &self.body);
        self.bytes += self.frame.len() as u64;
        self.out
            .write_all(&self.frame)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// Flushes and syncs the file; returns its size.
    fn finish(self) -> Result<u64, String> {
        let path = self.path;
        let file = self
            .out
            .into_inner()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.sync_all()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(self.bytes)
    }
}
