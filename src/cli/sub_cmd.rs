//! `surgemq sub`: subscribe to topic filters and print each message as it arrives, with
//! `mosquitto_sub`'s flags: `-v` prints "topic payload", `-C` stops after a count, `-W` stops
//! after a time and then exits with status 27, as mosquitto_sub does. MQTT 5 (`-V 5`) adds
//! mosquitto_sub's `--nl`, `--rap`, `--rh` and `-D subscribe ...`, and `--properties` prints
//! a message's user properties after its payload.

use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use futures_lite::FutureExt;
use surgemq::client::{block_on, Client, ClientError, ClientOptions};
use surgemq::protocol::{Properties, Publish, RetainHandling, SubscriptionOptions};
use surgemq::topic::validate_filter;

use super::client_args::{error_line, qos, ConnectArgs, PropertyCommand};

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
    /// MQTT 5 No Local: do not receive the messages this client publishes.
    #[arg(long = "nl")]
    no_local: bool,
    /// MQTT 5 Retain As Published: keep the retain flag of forwarded messages.
    #[arg(long = "rap")]
    retain_as_published: bool,
    /// MQTT 5 Retain Handling: 0 send retained messages at subscribe, 1 only for a new
    /// subscription, 2 never.
    #[arg(long = "rh", value_name = "N", value_parser = clap::value_parser!(u8).range(0..=2))]
    retain_handling: Option<u8>,
    /// MQTT 5: print each message's user properties after its payload, as key:value pairs
    /// separated by spaces (as mosquitto_sub's %P).
    #[arg(long = "properties")]
    properties: bool,
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
    let v5_only = [
        (args.no_local, "--nl"),
        (args.retain_as_published, "--rap"),
        (args.retain_handling.is_some(), "--rh"),
        (args.properties, "--properties"),
    ];
    if let Some((_, flag)) = v5_only.iter().find(|(set, _)| *set) {
        if !options.protocol.is_v5() {
            return Err(format!("{flag} needs MQTT 5 (-V 5)"));
        }
    }
    let properties = args
        .connect
        .properties("sub", &[PropertyCommand::Subscribe])?
        .subscribe;
    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    match block_on(subscribe_and_print(options, &args, properties, deadline))
        .map_err(|e| error_line(&e))??
    {
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
    properties: Properties,
    deadline: Option<Instant>,
) -> Result<Outcome, String> {
    let Some(connected) = within(deadline, Client::connect(options)).await else {
        return Ok(Outcome::TimedOut);
    };
    let (client, mut messages) = connected.map_err(|e| error_line(&e))?;
    let subscription = SubscriptionOptions {
        qos: qos(args.qos),
        no_local: args.no_local,
        retain_as_published: args.retain_as_published,
        retain_handling: match args.retain_handling {
            Some(1) => RetainHandling::SendIfNew,
            Some(2) => RetainHandling::DoNotSend,
            _ => RetainHandling::SendAtSubscribe,
        },
    };
    let filters: Vec<(&str, SubscriptionOptions)> = args
        .topic
        .iter()
        .map(|t| (t.as_str(), subscription))
        .collect();
    let subscribing = client.subscribe_with(&filters, properties);
    let Some(granted) = within(deadline, subscribing).await else {
        let _ = client.disconnect().await;
        return Ok(Outcome::TimedOut);
    };
    let granted = granted.map_err(|e| e.to_string())?;
    // Each refusal with its reason: "SUBACK 0x87 not authorized".
    let refused: Vec<(&str, ClientError)> = filters
        .iter()
        .zip(&granted)
        .filter_map(|((f, _), code)| Some((*f, ClientError::refused_subscription(*code)?)))
        .collect();
    if refused.len() == filters.len() {
        let _ = client.disconnect().await;
        let (_, why) = &refused[0];
        return Err(format!("the broker refused every subscription ({why})"));
    }
    for (f, why) in refused {
        eprintln!("surgemq: the broker refused the subscription to {f} ({why})");
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
    if args.properties {
        let user = message.properties.as_ref().map(|p| &p.user_properties);
        for (k, v) in user.into_iter().flatten() {
            write!(out, " {k}:{v}")?;
        }
    }
    if !args.no_eol {
        out.write_all(b"\n")?;
    }
    out.flush()
}
