//! `surgemq sub`: subscribe to topic filters and print each message as it arrives, with
//! `mosquitto_sub`'s flags: `-v` prints "topic payload", `-C` stops after a count, `-W` stops
//! after a time and then exits with status 27, as mosquitto_sub does.

use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use futures_lite::FutureExt;
use surgemq::client::{block_on, Client, ClientOptions};
use surgemq::protocol::{Publish, QoS, SubscribeReturnCode};
use surgemq::topic::validate_filter;

use super::client_args::{error_line, qos, ConnectArgs};

/// mosquitto_sub's exit status when `-W` expires (MOSQ_ERR_TIMEOUT).
const TIMED_OUT_STATUS: i32 = 27;

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct SubArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Topic filter to subscribe to (repeatable; at least one, here or in -L).
    #[arg(short = 't', long)]
    topic: Vec<String>,
    /// Maximum quality of service of the subscriptions.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Print "topic payload" instead of the payload alone.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Exit after this many messages.
    #[arg(short = 'C', long, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Exit after this many seconds (status 27 if it expires).
    #[arg(short = 'W', long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Do not print retained messages (those the broker had stored).
    #[arg(short = 'R', long = "no-retained")]
    no_retained: bool,
    /// Do not print a newline after each message.
    #[arg(short = 'N', long = "no-eol")]
    no_eol: bool,
}

enum Outcome {
    Done,
    TimedOut,
}

pub fn run(mut args: SubArgs) -> Result<(), String> {
    if let Some(topic) = args.connect.url_topic()? {
        args.topic.push(topic);
    }
    // Checked here rather than by clap, whose message for a missing flag spans two lines.
    if args.topic.is_empty() {
        return Err("-t/--topic (or -L/--url) is required".into());
    }
    for f in &args.topic {
        validate_filter(f).map_err(|e| format!("invalid -t/--topic {f:?}: {e}"))?;
    }
    let options = args.connect.options()?;
    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    match block_on(subscribe_and_print(options, &args, deadline)).map_err(|e| error_line(&e))?? {
        Outcome::Done => Ok(()),
        Outcome::TimedOut => {
            eprintln!("surgemq: timed out after {} s", args.timeout.unwrap_or(0));
            // main's error path exits with 1; mosquitto_sub users script against 27.
            std::process::exit(TIMED_OUT_STATUS);
        }
    }
}

async fn subscribe_and_print(
    options: ClientOptions,
    args: &SubArgs,
    deadline: Option<Instant>,
) -> Result<Outcome, String> {
    let Some(connected) = within(deadline, Client::connect(options)).await else {
        return Ok(Outcome::TimedOut);
    };
    let (client, mut messages) = connected.map_err(|e| error_line(&e))?;
    let qos = qos(args.qos);
    let filters: Vec<(&str, QoS)> = args.topic.iter().map(|t| (t.as_str(), qos)).collect();
    let Some(granted) = within(deadline, client.subscribe(&filters)).await else {
        let _ = client.disconnect().await;
        return Ok(Outcome::TimedOut);
    };
    let granted = granted.map_err(|e| e.to_string())?;
    let refused: Vec<&str> = filters
        .iter()
        .zip(&granted)
        .filter(|(_, code)| **code == SubscribeReturnCode::FAILURE)
        .map(|((f, _), _)| *f)
        .collect();
    if refused.len() == filters.len() {
        let _ = client.disconnect().await;
        return Err("the broker refused every subscription (SUBACK 0x80)".into());
    }
    for f in refused {
        eprintln!("surgemq: the broker refused the subscription to {f} (SUBACK 0x80)");
    }
    let mut printed = 0u64;
    loop {
        let Some(next) = within(deadline, messages.recv()).await else {
            let _ = client.disconnect().await;
            return Ok(Outcome::TimedOut);
        };
        let message = next.map_err(|e| e.to_string())?;
        if args.no_retained && message.retain {
            continue;
        }
        if print(&message, args).is_err() {
            // Standard output is gone (e.g. `| head -1`): nothing left to do.
            let _ = client.disconnect().await;
            return Ok(Outcome::Done);
        }
        printed += 1;
        if Some(printed) == args.count {
            client.disconnect().await.map_err(|e| e.to_string())?;
            return Ok(Outcome::Done);
        }
    }
}

/// `future`'s output, or None if `deadline` comes first.
async fn within<T>(deadline: Option<Instant>, future: impl Future<Output = T>) -> Option<T> {
    let Some(deadline) = deadline else {
        return Some(future.await);
    };
    let expire = async {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        None
    };
    async { Some(future.await) }.or(expire).await
}

/// The payload as bytes (it need not be text), after the topic with `-v`; an empty payload
/// with `-v` prints as "(null)", as mosquitto_sub prints it.
fn print(message: &Publish, args: &SubArgs) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.verbose {
        out.write_all(message.topic.as_bytes())?;
        out.write_all(b" ")?;
        if message.payload.is_empty() {
            out.write_all(b"(null)")?;
        }
    }
    out.write_all(&message.payload)?;
    if !args.no_eol {
        out.write_all(b"\n")?;
    }
    out.flush()
}
