//! The connection flags `surgemq pub` and `surgemq sub` share, spelled as Mosquitto's
//! `mosquitto_pub` / `mosquitto_sub` spell them (`-h` is the host, so help is `--help` only),
//! and their translation into validated [`ClientOptions`]. Every error names the flag.

use std::time::Duration;

use bytes::Bytes;
use clap::{ArgAction, Args, ValueEnum};
use surgemq::client::{ClientError, ClientOptions, Will};
use surgemq::protocol::{ProtocolLevel, QoS};
use surgemq::topic::validate_topic_name;

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// Broker host.
    #[arg(short = 'h', long, default_value = "localhost")]
    pub host: String,
    /// Broker port.
    #[arg(short = 'p', long, default_value_t = 1883)]
    pub port: u16,
    /// Client id [default: surgemq- and 15 random hex digits].
    #[arg(short = 'i', long = "id")]
    pub id: Option<String>,
    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long = "pw")]
    pub password: Option<String>,
    /// Keepalive in seconds (0: off).
    #[arg(short = 'k', long, default_value_t = 60)]
    pub keepalive: u16,
    /// Disable clean session: resume the broker's session for this client id (needs -i).
    #[arg(short = 'c', long = "disable-clean-session")]
    pub persistent: bool,
    /// Print debug messages (every packet sent and received) to stderr.
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// MQTT protocol version.
    #[arg(
        short = 'V',
        long = "protocol-version",
        value_enum,
        default_value = "mqttv311"
    )]
    pub protocol: Version,
    /// Topic of the will, published by the broker if this client goes away without DISCONNECT.
    #[arg(long)]
    pub will_topic: Option<String>,
    /// Payload of the will.
    #[arg(long, requires = "will_topic")]
    pub will_payload: Option<String>,
    /// QoS of the will.
    #[arg(long, requires = "will_topic", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub will_qos: u8,
    /// Retain the will.
    #[arg(long, requires = "will_topic")]
    pub will_retain: bool,
}

/// `-V`: the names Mosquitto's tools accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Version {
    #[value(name = "mqttv31", alias = "31")]
    Mqttv31,
    #[value(name = "mqttv311", alias = "311")]
    Mqttv311,
}

/// `-q` as a QoS; clap has already checked the range.
pub fn qos(q: u8) -> QoS {
    QoS::from_u8(q).unwrap_or(QoS::AtMostOnce)
}

impl ConnectArgs {
    /// The options these flags describe, validated; errors name the flag.
    pub fn options(&self) -> Result<ClientOptions, String> {
        if self.persistent && self.id.as_deref().unwrap_or("").is_empty() {
            return Err("-c/--disable-clean-session needs a client id (-i)".into());
        }
        let will = match &self.will_topic {
            Some(topic) => {
                validate_topic_name(topic).map_err(|e| format!("invalid --will-topic: {e}"))?;
                Some(Will {
                    topic: topic.clone(),
                    payload: Bytes::from(self.will_payload.clone().unwrap_or_default()),
                    qos: qos(self.will_qos),
                    retain: self.will_retain,
                })
            }
            None => None,
        };
        let defaults = ClientOptions::new(self.host.clone(), self.port);
        let options = ClientOptions {
            client_id: self.id.clone().unwrap_or(defaults.client_id.clone()),
            clean_session: !self.persistent,
            keep_alive: self.keepalive,
            username: self.username.clone(),
            password: self.password.clone().map(Bytes::from),
            will,
            protocol: match self.protocol {
                Version::Mqttv31 => ProtocolLevel::V31,
                Version::Mqttv311 => ProtocolLevel::V311,
            },
            connect_timeout: Duration::from_secs(10),
            ..defaults
        };
        options.validate().map_err(|e| match e {
            ClientError::Invalid { what, reason } => {
                format!("invalid {}: {reason}", flag_of(what))
            }
            other => other.to_string(),
        })?;
        Ok(options)
    }
}

/// The flag that sets the option `ClientOptions::validate` names.
fn flag_of(what: &str) -> &str {
    match what {
        "host" => "-h/--host",
        "client id" => "-i/--id",
        "user name" => "-u/--username",
        "password" => "-P/--pw",
        "will topic" => "--will-topic",
        "will payload" => "--will-payload",
        other => other,
    }
}
