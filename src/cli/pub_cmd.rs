//! `surgemq pub`: publish one message (`-m`, `-f`, `-s`, `-n`) or one message per line of
//! standard input (`-l`), with `mosquitto_pub`'s flags, then disconnect. At QoS 1/2 it exits
//! only once the broker has acknowledged every message. With `-V 5`, `-D publish ...` sets the
//! PUBLISH properties, and a broker's refusal (PUBACK/PUBREC 0x80 and above) is an error.

use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::path::PathBuf;

use bytes::Bytes;
use clap::{ArgGroup, Args};
use surgemq::client::{block_on, Client, ClientError};
use surgemq::protocol::{Properties, QoS};
use surgemq::topic::validate_topic_name;

use super::client_args::{error_line, qos, ConnectArgs, PropertyCommand};

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
#[command(group(
    ArgGroup::new("source")
        .args(["message", "file", "stdin_line", "stdin_file", "null_message"])
))]
pub struct PubArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Topic to publish to (required, unless -L gives it).
    #[arg(short = 't', long, conflicts_with = "url")]
    topic: Option<String>,
    /// Message to publish.
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Publish the contents of FILE as one message.
    #[arg(short = 'f', long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Publish each line of standard input as a message (without its newline).
    #[arg(short = 'l', long = "stdin-line")]
    stdin_line: bool,
    /// Publish all of standard input as one message.
    #[arg(short = 's', long = "stdin-file")]
    stdin_file: bool,
    /// Publish an empty message.
    #[arg(short = 'n', long = "null-message")]
    null_message: bool,
    /// Quality of service.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Ask the broker to retain the message.
    #[arg(short = 'r', long)]
    retain: bool,
}

/// Where the messages come from, read before connecting except for `-l`.
enum Source {
    One(Bytes),
    Lines,
}

pub fn run(args: PubArgs) -> Result<(), String> {
    // Checked here rather than by clap, whose message for a missing flag spans two lines.
    let topic = match args.connect.url_topic()? {
        Some(topic) => topic,
        None => args.topic.ok_or("-t/--topic (or -L/--url) is required")?,
    };
    validate_topic_name(&topic).map_err(|e| format!("invalid -t/--topic: {e}"))?;
    if args.message.is_none()
        && args.file.is_none()
        && !(args.stdin_line || args.stdin_file || args.null_message)
    {
        return Err("a message is required: -m, -f, -l, -s or -n".into());
    }
    let options = args.connect.options()?;
    let properties = args
        .connect
        .properties("pub", &[PropertyCommand::Publish])?
        .publish;
    let source = if let Some(m) = args.message {
        Source::One(Bytes::from(m))
    } else if let Some(path) = &args.file {
        let data = std::fs::read(path)
            .map_err(|e| format!("cannot read -f/--file {}: {e}", path.display()))?;
        Source::One(Bytes::from(data))
    } else if args.stdin_file {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        Source::One(Bytes::from(data))
    } else if args.stdin_line {
        Source::Lines
    } else {
        Source::One(Bytes::new())
    };
    let (qos, retain) = (qos(args.qos), args.retain);
    block_on(async move {
        let (client, _messages) = Client::connect(options).await?;
        match source {
            Source::One(payload) => {
                client
                    .publish_with(&topic, payload, qos, retain, properties)
                    .await?
            }
            Source::Lines => publish_lines(&client, &topic, qos, retain, &properties).await?,
        }
        client.disconnect().await
    })
    .map_err(|e| error_line(&e))?
    .map_err(|e| error_line(&e))
}

/// Publishes every line of standard input, pipelined: publishes are queued as lines arrive
/// and acknowledgements awaited behind them, so a long input is not one round trip per line.
/// Lines are read on glommio's blocking thread pool, so keepalive goes on while stdin is quiet.
async fn publish_lines(
    client: &Client,
    topic: &str,
    qos: QoS,
    retain: bool,
    properties: &Properties,
) -> Result<(), ClientError> {
    let mut outstanding = VecDeque::new();
    loop {
        let line = glommio::executor().spawn_blocking(read_line).await;
        let Some(line) = line.map_err(ClientError::Io)? else {
            break;
        };
        outstanding.push_back(client.publish_with(topic, line, qos, retain, properties.clone()));
        // Bounded: beyond a few windows' worth, wait for the oldest before reading on.
        if outstanding.len() > 1024 {
            outstanding.pop_front().expect("not empty").await?;
        }
    }
    for ack in outstanding {
        ack.await?;
    }
    Ok(())
}

/// One line of standard input without its `\n` (a `\r` stays, as with mosquitto_pub);
/// `None` at the end. A last line without a newline still counts.
fn read_line() -> Result<Option<Bytes>, std::sync::Arc<std::io::Error>> {
    let mut line = Vec::new();
    let n = std::io::stdin()
        .lock()
        .read_until(b'\n', &mut line)
        .map_err(std::sync::Arc::new)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(Some(Bytes::from(line)))
}
