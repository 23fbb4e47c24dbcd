//! The connection flags `surgemq pub` and `surgemq sub` share, spelled as Mosquitto's
//! `mosquitto_pub` / `mosquitto_sub` spell them (`-h` is the host, so help is `--help` only),
//! and their translation into validated [`ClientOptions`]. Every error names the flag.
//!
//! Transports as mosquitto_pub chooses them: TLS with `--cafile`, `--cert`/`--key`,
//! `--insecure`, `--tls-version`, `--tls-use-os-certs`, an `mqtts://` or `wss://` URL (`-L`),
//! or `-p 8883`; WebSockets with `--ws [PATH]` or a `ws://` / `wss://` URL. The port defaults
//! to 8883 with TLS, 1883 without (WebSockets included, as with mosquitto_pub).
//!
//! MQTT 5 as mosquitto_pub chooses it: `-V 5` (or `mqttv5`), properties with
//! `-D COMMAND IDENTIFIER VALUE` (user properties take a key and a value), `-x` for the
//! session expiry interval.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgAction, Args, ValueEnum};
use surgemq::client::{
    ClientError, ClientOptions, TlsOptions, TlsVersion, Transport, Will, WillProperties,
};
use surgemq::protocol::{ByteStr, Properties, ProtocolLevel, QoS};
use surgemq::topic::validate_topic_name;

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// Broker host.
    #[arg(short = 'h', long, default_value = "localhost")]
    pub host: String,
    /// Broker port [default: 1883; 8883 with TLS].
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// The broker and topic as one URL, as mosquitto_pub's -L:
    /// mqtt(s)://[USER[:PASSWORD]@]HOST[:PORT]/TOPIC, or ws:// / wss:// for WebSockets (the
    /// path after the host is the topic there too; the WebSocket path comes from --ws, /mqtt
    /// by default). Instead of -h and -p (and of -t for pub; sub adds it to its -t filters).
    #[arg(short = 'L', long = "url", value_name = "URL", conflicts_with_all = ["host", "port"])]
    pub url: Option<String>,
    /// Use MQTT over WebSockets, upgrading on PATH [default PATH: /mqtt]. With TLS options or
    /// an mqtts:// URL: WebSockets over TLS.
    #[arg(long = "ws", value_name = "PATH", num_args = 0..=1, default_missing_value = "/mqtt")]
    pub ws: Option<String>,
    /// Use TLS, trusting the CA certificates in this PEM file for the broker's certificate.
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that require one; turns TLS on; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Use TLS without checking the broker's certificate at all (neither its CA nor its
    /// name; mosquitto_pub's --insecure skips the name only). For tests: anyone in between
    /// can read and change the traffic.
    #[arg(long)]
    pub insecure: bool,
    /// Use TLS, trusting the operating system's CA certificates (the default with TLS and no
    /// --cafile).
    #[arg(long)]
    pub tls_use_os_certs: bool,
    /// Use TLS, of this version only [default: 1.3 or 1.2].
    #[arg(long, value_enum, value_name = "VERSION")]
    pub tls_version: Option<TlsVersionArg>,
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
    /// With MQTT 5 the session then never expires, unless -x says when.
    #[arg(short = 'c', long = "disable-clean-session")]
    pub persistent: bool,
    /// MQTT 5 session expiry interval in seconds; -1 or ∞: never [default: never with -c,
    /// 0 without].
    #[arg(
        short = 'x',
        long = "session-expiry-interval",
        value_name = "SECONDS",
        allow_hyphen_values = true
    )]
    pub session_expiry: Option<String>,
    /// MQTT 5 property: -D COMMAND IDENTIFIER VALUE, as mosquitto_pub's (repeatable).
    /// COMMAND is connect, publish, subscribe, unsubscribe or will; user-property takes a
    /// key and a value. E.g. -D publish user-property unit celsius,
    /// -D connect session-expiry-interval 60, -D publish content-type text/plain.
    #[arg(
        short = 'D',
        long = "property",
        value_names = ["COMMAND", "IDENTIFIER", "VALUE"],
        num_args = 3..=4,
        action = ArgAction::Append
    )]
    pub property: Vec<String>,
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
    #[value(name = "mqttv5", alias = "5")]
    Mqttv5,
}

/// Which packet a `-D` property goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyCommand {
    Connect,
    Publish,
    Subscribe,
    Unsubscribe,
    Will,
}

impl PropertyCommand {
    fn parse(s: &str) -> Option<PropertyCommand> {
        Some(match s {
            "connect" => PropertyCommand::Connect,
            "publish" => PropertyCommand::Publish,
            "subscribe" => PropertyCommand::Subscribe,
            "unsubscribe" => PropertyCommand::Unsubscribe,
            "will" => PropertyCommand::Will,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PropertyCommand::Connect => "connect",
            PropertyCommand::Publish => "publish",
            PropertyCommand::Subscribe => "subscribe",
            PropertyCommand::Unsubscribe => "unsubscribe",
            PropertyCommand::Will => "will",
        }
    }
}

/// The properties of each `-D` command, as the library takes them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CliProperties {
    pub connect: Properties,
    pub publish: Properties,
    pub subscribe: Properties,
    pub unsubscribe: Properties,
    pub will: Properties,
}

impl CliProperties {
    fn of(&mut self, command: PropertyCommand) -> &mut Properties {
        match command {
            PropertyCommand::Connect => &mut self.connect,
            PropertyCommand::Publish => &mut self.publish,
            PropertyCommand::Subscribe => &mut self.subscribe,
            PropertyCommand::Unsubscribe => &mut self.unsubscribe,
            PropertyCommand::Will => &mut self.will,
        }
    }

    /// Whether any `-D` went into `command`'s packet.
    pub fn has(&self, command: PropertyCommand) -> bool {
        let mut copy = self.clone();
        *copy.of(command) != Properties::default()
    }
}

/// The `-D` flags one by one. Clap hands over their words in one list, so they are split
/// again by what each takes: COMMAND IDENTIFIER VALUE, or COMMAND user-property KEY VALUE.
fn split_properties(words: &[String]) -> Vec<Vec<String>> {
    let mut flags = Vec::new();
    let mut rest = words;
    while !rest.is_empty() {
        let n = match rest.get(1) {
            Some(id) if id == "user-property" => 4,
            _ => 3,
        };
        let n = n.min(rest.len());
        flags.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    flags
}

/// Parses the `-D` flags: each is COMMAND IDENTIFIER VALUE (user-property: KEY VALUE), with
/// mosquitto_pub's names. Errors name the flag and what is wrong, in one line.
pub fn parse_properties(words: &[String]) -> Result<CliProperties, String> {
    use PropertyCommand as C;
    let mut all = CliProperties::default();
    for flag in split_properties(words) {
        if flag.len() < 3 {
            return Err(format!(
                "invalid -D {}: expected COMMAND IDENTIFIER VALUE",
                flag.join(" ")
            ));
        }
        let shown = flag.join(" ");
        let bad = |why: &str| format!("invalid -D {shown}: {why}");
        let command = PropertyCommand::parse(&flag[0]).ok_or_else(|| {
            bad("unknown command (connect, publish, subscribe, unsubscribe, will)")
        })?;
        let id = flag[1].as_str();
        let values = &flag[2..];
        let user = id == "user-property";
        if values.len() != 1 + usize::from(user) {
            return Err(bad(if user {
                "user-property takes a key and a value"
            } else {
                "takes one value"
            }));
        }
        let value = values[0].as_str();
        let number = |max: u64| -> Result<u64, String> {
            value
                .parse::<u64>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| bad(&format!("the value must be a number from 0 to {max}")))
        };
        let flag01 = || -> Result<bool, String> {
            match value {
                "0" => Ok(false),
                "1" => Ok(true),
                _ => Err(bad("the value must be 0 or 1")),
            }
        };
        let allowed: &[C] = match id {
            "user-property" => &[
                C::Connect,
                C::Publish,
                C::Subscribe,
                C::Unsubscribe,
                C::Will,
            ],
            "payload-format-indicator"
            | "message-expiry-interval"
            | "content-type"
            | "response-topic"
            | "correlation-data" => &[C::Publish, C::Will],
            "will-delay-interval" => &[C::Will],
            "subscription-identifier" => &[C::Subscribe],
            "session-expiry-interval"
            | "receive-maximum"
            | "maximum-packet-size"
            | "topic-alias-maximum"
            | "request-problem-information"
            | "request-response-information" => &[C::Connect],
            "topic-alias" | "authentication-method" | "authentication-data" => {
                return Err(bad("not supported by surgemq"))
            }
            _ => return Err(bad("unknown property identifier")),
        };
        if !allowed.contains(&command) {
            return Err(bad(&format!("{id} is not a {} property", command.name())));
        }
        let p = all.of(command);
        match id {
            "user-property" => p
                .user_properties
                .push((ByteStr::from(value), ByteStr::from(values[1].as_str()))),
            "payload-format-indicator" => p.payload_format_utf8 = Some(flag01()?),
            "message-expiry-interval" => {
                p.message_expiry_interval = Some(number(u64::from(u32::MAX))? as u32)
            }
            "content-type" => p.content_type = Some(ByteStr::from(value)),
            "response-topic" => {
                validate_topic_name(value).map_err(|e| bad(&e.to_string()))?;
                p.response_topic = Some(ByteStr::from(value))
            }
            "correlation-data" => p.correlation_data = Some(Bytes::from(value.to_string())),
            "will-delay-interval" => {
                p.will_delay_interval = Some(number(u64::from(u32::MAX))? as u32)
            }
            "subscription-identifier" => {
                let n = number(268_435_455)?;
                if n == 0 {
                    return Err(bad("the value must be a number from 1 to 268435455"));
                }
                p.subscription_identifiers = [n as u32].into_iter().collect();
            }
            "session-expiry-interval" => {
                p.session_expiry_interval = Some(number(u64::from(u32::MAX))? as u32)
            }
            "receive-maximum" => {
                let n = number(65_535)?;
                if n == 0 {
                    return Err(bad("the value must be a number from 1 to 65535"));
                }
                p.receive_maximum = Some(n as u16)
            }
            "maximum-packet-size" => {
                let n = number(u64::from(u32::MAX))?;
                if n == 0 {
                    return Err(bad("the value must be a number from 1 to 4294967295"));
                }
                p.maximum_packet_size = Some(n as u32)
            }
            "topic-alias-maximum" => p.topic_alias_maximum = Some(number(65_535)? as u16),
            "request-problem-information" => p.request_problem_information = Some(flag01()?),
            "request-response-information" => p.request_response_information = Some(flag01()?),
            _ => unreachable!("checked above"),
        }
    }
    Ok(all)
}

/// `-x`: seconds, or -1 / ∞ for never.
fn parse_expiry(s: &str) -> Result<u32, String> {
    match s {
        "-1" | "∞" => Ok(u32::MAX),
        _ => s.parse::<u32>().map_err(|_| {
            format!("invalid -x/--session-expiry-interval {s:?}: seconds from 0 to 4294967295, or -1 for never")
        }),
    }
}

/// `--tls-version`: the names Mosquitto's tools accept (TLS 1.1 is not offered by rustls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsVersionArg {
    #[value(name = "tlsv1.2")]
    Tlsv12,
    #[value(name = "tlsv1.3")]
    Tlsv13,
}

/// `-L`: what a mosquitto_pub URL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub ws: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub topic: String,
}

/// Parses `scheme://[user[:password]@]host[:port]/topic` (an IPv6 host in brackets); the
/// topic is everything after the first `/`, as it is (`#` and `+` included).
pub fn parse_url(url: &str) -> Result<Url, String> {
    let bad = |why: &str| format!("invalid -L/--url {url:?}: {why}");
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected mqtt://, mqtts://, ws:// or wss://"))?;
    let (tls, ws) = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" => (false, false),
        "mqtts" => (true, false),
        "ws" => (false, true),
        "wss" => (true, true),
        _ => return Err(bad("unsupported scheme (mqtt, mqtts, ws, wss)")),
    };
    let (authority, topic) = rest
        .split_once('/')
        .ok_or_else(|| bad("no topic (the path after the host is the topic)"))?;
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pw)) => (Some(user.to_string()), Some(pw.to_string())),
            None => (Some(u.to_string()), None),
        },
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in the host"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            ),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| bad("the port is not a number up to 65535"))
        })
        .transpose()?;
    Ok(Url {
        tls,
        ws,
        username,
        password,
        host: host.to_string(),
        port,
        topic: topic.to_string(),
    })
}

/// A failed client in one line, with a hint for the TLS failures a flag fixes.
pub fn error_line(e: &ClientError) -> String {
    use rustls::{AlertDescription, Error as Tls};
    let hint = match e {
        ClientError::Tls(Tls::InvalidCertificate(_)) => {
            " (is --cafile the CA that signed the broker's certificate, and -h a name it is for? \
             --insecure skips the check, for tests only)"
        }
        ClientError::Tls(Tls::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::HandshakeFailure
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA,
        )) => " (does the broker require a client certificate signed by its CA? --cert, --key)",
        _ => "",
    };
    format!("{e}{hint}")
}

/// `-q` as a QoS; clap has already checked the range.
pub fn qos(q: u8) -> QoS {
    QoS::from_u8(q).unwrap_or(QoS::AtMostOnce)
}

impl ConnectArgs {
    /// The topic `-L` gives, if any.
    pub fn url_topic(&self) -> Result<Option<String>, String> {
        Ok(self
            .url
            .as_deref()
            .map(parse_url)
            .transpose()?
            .map(|u| u.topic))
    }

    /// Transport, host, port, and the user and password `-L` gives.
    fn transport(&self) -> Result<(Transport, TlsOptions, ClientOptions), String> {
        let url = self.url.as_deref().map(parse_url).transpose()?;
        let tls = url.as_ref().is_some_and(|u| u.tls)
            || self.cafile.is_some()
            || self.cert.is_some()
            || self.insecure
            || self.tls_use_os_certs
            || self.tls_version.is_some()
            // mosquitto_pub turns TLS on for -p 8883 too, with the system's CAs.
            || (url.is_none() && self.port == Some(8883));
        let ws = url.as_ref().is_some_and(|u| u.ws) || self.ws.is_some();
        let path = || self.ws.clone().unwrap_or_else(|| "/mqtt".to_string());
        let transport = match (tls, ws) {
            (false, false) => Transport::Mqtt,
            (true, false) => Transport::Mqtts,
            (false, true) => Transport::Ws { path: path() },
            (true, true) => Transport::Wss { path: path() },
        };
        let port = self
            .port
            .or(url.as_ref().and_then(|u| u.port))
            .unwrap_or(if tls { 8883 } else { 1883 });
        let host = url.as_ref().map_or(self.host.clone(), |u| u.host.clone());
        let mut options = ClientOptions::new(host, port);
        if let Some(u) = url {
            if u.username.is_some() && (self.username.is_some() || self.password.is_some()) {
                return Err(
                    "-L/--url gives a user name already: drop -u/--username and -P/--pw".into(),
                );
            }
            options.username = u.username;
            options.password = u.password.map(Bytes::from);
        }
        let tls_options = TlsOptions {
            ca_file: self.cafile.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            insecure: self.insecure,
            version: self.tls_version.map(|v| match v {
                TlsVersionArg::Tlsv12 => TlsVersion::Tls12,
                TlsVersionArg::Tlsv13 => TlsVersion::Tls13,
            }),
            ..TlsOptions::default()
        };
        Ok((transport, tls_options, options))
    }

    /// The protocol `-V` asks for.
    pub fn level(&self) -> ProtocolLevel {
        match self.protocol {
            Version::Mqttv31 => ProtocolLevel::V31,
            Version::Mqttv311 => ProtocolLevel::V311,
            Version::Mqttv5 => ProtocolLevel::V5,
        }
    }

    /// The `-D` properties, checked: they need `-V 5`, and `tool` ("pub" or "sub") takes
    /// only the commands in `commands` besides connect and will.
    pub fn properties(
        &self,
        tool: &str,
        commands: &[PropertyCommand],
    ) -> Result<CliProperties, String> {
        let all = parse_properties(&self.property)?;
        if self.property.is_empty() {
            return Ok(all);
        }
        if !self.level().is_v5() {
            return Err("-D/--property needs MQTT 5 (-V 5)".into());
        }
        for c in [
            PropertyCommand::Publish,
            PropertyCommand::Subscribe,
            PropertyCommand::Unsubscribe,
        ] {
            if all.has(c) && !commands.contains(&c) {
                return Err(format!(
                    "invalid -D {}: surgemq {tool} sends no {} packet",
                    c.name(),
                    c.name().to_uppercase()
                ));
            }
        }
        Ok(all)
    }

    /// The options these flags describe, validated, TLS files read; errors name the flag.
    pub fn options(&self) -> Result<ClientOptions, String> {
        let level = self.level();
        let v5 = level.is_v5();
        if self.persistent && self.id.as_deref().unwrap_or("").is_empty() {
            return Err("-c/--disable-clean-session needs a client id (-i)".into());
        }
        if self.session_expiry.is_some() && !v5 {
            return Err("-x/--session-expiry-interval needs MQTT 5 (-V 5)".into());
        }
        let properties = parse_properties(&self.property)?;
        if !self.property.is_empty() && !v5 {
            return Err("-D/--property needs MQTT 5 (-V 5)".into());
        }
        let (transport, tls, defaults) = self.transport()?;
        let will = match &self.will_topic {
            Some(topic) => {
                validate_topic_name(topic).map_err(|e| format!("invalid --will-topic: {e}"))?;
                let mut will = Will::new(
                    topic.clone(),
                    Bytes::from(self.will_payload.clone().unwrap_or_default()),
                    qos(self.will_qos),
                    self.will_retain,
                );
                let w = &properties.will;
                will.properties = WillProperties {
                    delay_interval: w.will_delay_interval,
                    message_expiry_interval: w.message_expiry_interval,
                    payload_format_utf8: w.payload_format_utf8,
                    content_type: w.content_type.as_ref().map(|s| s.to_string()),
                    response_topic: w.response_topic.as_ref().map(|s| s.to_string()),
                    correlation_data: w.correlation_data.clone(),
                    user_properties: strings(&w.user_properties),
                };
                Some(will)
            }
            None if properties.has(PropertyCommand::Will) => {
                return Err("-D will needs a will (--will-topic)".into())
            }
            None => None,
        };
        let c = &properties.connect;
        // mosquitto_sub's -x default: a session that never expires with -c, none without.
        let session_expiry = match &self.session_expiry {
            Some(x) => Some(parse_expiry(x)?),
            None => c
                .session_expiry_interval
                .or(self.persistent.then_some(u32::MAX)),
        };
        let mut options = ClientOptions {
            transport,
            tls,
            client_id: self.id.clone().unwrap_or(defaults.client_id.clone()),
            clean_session: !self.persistent,
            keep_alive: self.keepalive,
            username: self.username.clone().or(defaults.username.clone()),
            password: self
                .password
                .clone()
                .map(Bytes::from)
                .or(defaults.password.clone()),
            will,
            protocol: level,
            session_expiry: session_expiry.filter(|_| v5),
            receive_maximum: c.receive_maximum,
            maximum_packet_size: c.maximum_packet_size,
            topic_alias_maximum: c.topic_alias_maximum,
            user_properties: strings(&c.user_properties),
            request_problem_information: c.request_problem_information,
            request_response_information: c.request_response_information,
            connect_timeout: Duration::from_secs(10),
            ..defaults
        };
        let flagged = |e| match e {
            ClientError::Invalid { what, reason } => {
                format!("invalid {}: {reason}", flag_of(what))
            }
            other => other.to_string(),
        };
        options.validate().map_err(flagged)?;
        if options.transport.uses_tls() {
            // The files are read now, so that a bad one is named before connecting.
            options.tls.config = Some(options.tls.client_config().map_err(flagged)?);
        }
        Ok(options)
    }
}

fn strings(pairs: &[(ByteStr, ByteStr)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
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
        "tls ca_file" => "--cafile",
        "tls cert" => "--cert",
        "tls key" => "--key",
        "tls" => "TLS options",
        "websocket path" => "--ws",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    #[command(disable_help_flag = true)]
    struct Test {
        #[command(flatten)]
        connect: ConnectArgs,
    }

    fn args(line: &[&str]) -> ConnectArgs {
        Test::try_parse_from([&["test"], line].concat())
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .connect
    }

    /// Transport, host and port of a command line; TLS files are not read.
    fn target(line: &[&str]) -> (Transport, String, u16) {
        let (transport, _, o) = args(line).transport().unwrap();
        (transport, o.host, o.port)
    }

    #[test]
    fn urls_as_mosquitto_pub_reads_them() {
        let u = parse_url("mqtts://user:p@ss:w@broker.example:8884/a/b/#").unwrap();
        assert_eq!(
            u,
            Url {
                tls: true,
                ws: false,
                username: Some("user".into()),
                password: Some("p@ss:w".into()),
                host: "broker.example".into(),
                port: Some(8884),
                topic: "a/b/#".into(),
            }
        );
        let u = parse_url("WS://[::1]:9001/t").unwrap();
        assert_eq!(
            (u.ws, u.tls, u.host.as_str(), u.port),
            (true, false, "::1", Some(9001))
        );
        let u = parse_url("wss://h/").unwrap();
        assert_eq!(
            (u.ws, u.tls, u.port, u.topic.as_str()),
            (true, true, None, "")
        );
        let u = parse_url("mqtt://me@h/t").unwrap();
        assert_eq!((u.username.as_deref(), u.password), (Some("me"), None));
        for bad in [
            "h:1883/t",
            "http://h/t",
            "mqtt://h",
            "mqtt:///t",
            "mqtt://h:port/t",
            "mqtt://h:70000/t",
            "mqtt://[::1/t",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.starts_with("invalid -L/--url"), "{bad}: {e}");
        }
    }

    #[test]
    fn tls_and_websockets_from_the_flags() {
        let ws = |p: &str| Transport::Ws { path: p.into() };
        let wss = |p: &str| Transport::Wss { path: p.into() };
        let local = "localhost".to_string();
        assert_eq!(target(&[]), (Transport::Mqtt, local.clone(), 1883));
        assert_eq!(
            target(&["--cafile", "ca.pem"]),
            (Transport::Mqtts, local.clone(), 8883)
        );
        assert_eq!(
            target(&["--insecure", "-p", "1884"]),
            (Transport::Mqtts, local.clone(), 1884)
        );
        assert_eq!(
            target(&["-p", "8883"]),
            (Transport::Mqtts, local.clone(), 8883)
        );
        assert_eq!(target(&["--tls-version", "tlsv1.3"]).0, Transport::Mqtts);
        assert_eq!(target(&["--ws"]), (ws("/mqtt"), local.clone(), 1883));
        assert_eq!(target(&["--ws", "/x", "-d"]).0, ws("/x"));
        assert_eq!(
            target(&["--ws", "--cafile", "ca.pem"]),
            (wss("/mqtt"), local.clone(), 8883)
        );
        assert_eq!(
            target(&["-L", "mqtts://b.example/t"]),
            (Transport::Mqtts, "b.example".into(), 8883)
        );
        // -L mqtt://...:8883 says plain MQTT; only -p 8883 alone turns TLS on.
        assert_eq!(
            target(&["-L", "mqtt://b:8883/t"]),
            (Transport::Mqtt, "b".into(), 8883)
        );
        assert_eq!(
            target(&["-L", "ws://b:9001/t", "--ws", "/mqtt/ws"]),
            (ws("/mqtt/ws"), "b".into(), 9001)
        );
        assert_eq!(
            target(&["-L", "wss://b/t"]),
            (wss("/mqtt"), "b".into(), 8883)
        );
        assert_eq!(target(&["-L", "mqtts://b/t", "--ws"]).0, wss("/mqtt"));
    }

    #[test]
    fn url_user_and_flags() {
        let o = args(&["-L", "mqtt://u:pw@b/t"]).options().unwrap();
        assert_eq!(o.username.as_deref(), Some("u"));
        assert_eq!(o.password.as_deref(), Some(&b"pw"[..]));
        let e = args(&["-L", "mqtt://u@b/t", "-u", "v"])
            .options()
            .unwrap_err();
        assert!(e.contains("-u/--username"), "{e}");
        assert_eq!(
            args(&["-L", "mqtt://b/x/y"])
                .url_topic()
                .unwrap()
                .as_deref(),
            Some("x/y")
        );
        for conflict in [
            &["-L", "mqtt://b/t", "-h", "c"][..],
            &["-L", "mqtt://b/t", "-p", "1"],
        ] {
            assert!(Test::try_parse_from([&["test"], conflict].concat()).is_err());
        }
    }

    #[test]
    fn mqtt5_version_names_and_properties() {
        for (v, level) in [
            ("5", ProtocolLevel::V5),
            ("mqttv5", ProtocolLevel::V5),
            ("311", ProtocolLevel::V311),
            ("mqttv311", ProtocolLevel::V311),
            ("31", ProtocolLevel::V31),
        ] {
            assert_eq!(args(&["-V", v]).options().unwrap().protocol, level, "{v}");
            assert_eq!(
                args(&["--protocol-version", v]).options().unwrap().protocol,
                level
            );
        }
        let a = args(&[
            "-V",
            "5",
            "-D",
            "connect",
            "session-expiry-interval",
            "30",
            "-D",
            "connect",
            "receive-maximum",
            "7",
            "-D",
            "connect",
            "user-property",
            "k",
            "v",
            "-D",
            "publish",
            "user-property",
            "a",
            "b",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "message-expiry-interval",
            "9",
            "-D",
            "publish",
            "response-topic",
            "r/t",
            "-D",
            "publish",
            "correlation-data",
            "c",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
            "-D",
            "subscribe",
            "subscription-identifier",
            "3",
            "-D",
            "subscribe",
            "user-property",
            "s",
            "t",
        ]);
        let o = a.options().unwrap();
        assert_eq!(o.session_expiry, Some(30));
        assert_eq!(o.receive_maximum, Some(7));
        assert_eq!(o.user_properties, [("k".to_string(), "v".to_string())]);
        let p = a
            .properties(
                "sub",
                &[PropertyCommand::Subscribe, PropertyCommand::Publish],
            )
            .unwrap();
        let publish = p.publish;
        assert_eq!(
            publish.user_properties,
            [(ByteStr::from("a"), ByteStr::from("b"))]
        );
        assert_eq!(publish.content_type.as_deref(), Some("text/plain"));
        assert_eq!(publish.message_expiry_interval, Some(9));
        assert_eq!(publish.response_topic.as_deref(), Some("r/t"));
        assert_eq!(publish.correlation_data.as_deref(), Some(&b"c"[..]));
        assert_eq!(publish.payload_format_utf8, Some(true));
        assert_eq!(p.subscribe.subscription_identifiers.as_slice(), [3]);
        assert_eq!(p.subscribe.user_properties.len(), 1);
        // -x wins over -D connect session-expiry-interval; -c alone: never expires.
        let o = args(&[
            "-V",
            "5",
            "-x",
            "-1",
            "-D",
            "connect",
            "session-expiry-interval",
            "3",
        ])
        .options()
        .unwrap();
        assert_eq!(o.session_expiry, Some(u32::MAX));
        let o = args(&["-V", "5", "-c", "-i", "me"]).options().unwrap();
        assert_eq!((o.clean_session, o.session_expiry), (false, Some(u32::MAX)));
        let o = args(&["-V", "5", "-c", "-i", "me", "-x", "60"])
            .options()
            .unwrap();
        assert_eq!(o.session_expiry, Some(60));
        assert_eq!(args(&["-V", "5"]).options().unwrap().session_expiry, None);
        // Will properties go into the will.
        let o = args(&[
            "-V",
            "5",
            "--will-topic",
            "w",
            "-D",
            "will",
            "will-delay-interval",
            "4",
            "-D",
            "will",
            "user-property",
            "x",
            "y",
        ])
        .options()
        .unwrap();
        let will = o.will.unwrap().properties;
        assert_eq!(will.delay_interval, Some(4));
        assert_eq!(will.user_properties, [("x".to_string(), "y".to_string())]);
    }

    #[test]
    fn bad_properties_name_the_flag_in_one_line() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["-V", "5", "-D", "frob", "user-property", "k", "v"],
                "invalid -D frob user-property k v: unknown command",
            ),
            (
                &["-V", "5", "-D", "publish", "colour", "red"],
                "invalid -D publish colour red: unknown property identifier",
            ),
            (
                &["-V", "5", "-D", "connect", "content-type", "x"],
                "invalid -D connect content-type x: content-type is not a connect property",
            ),
            (
                &["-V", "5", "-D", "connect", "receive-maximum", "0"],
                "invalid -D connect receive-maximum 0: the value must be a number from 1",
            ),
            (
                &["-V", "5", "-D", "publish", "payload-format-indicator", "2"],
                "invalid -D publish payload-format-indicator 2: the value must be 0 or 1",
            ),
            (
                &["-V", "5", "-D", "publish", "topic-alias", "1"],
                "invalid -D publish topic-alias 1: not supported",
            ),
            (
                &["-D", "publish", "content-type", "x"],
                "-D/--property needs MQTT 5 (-V 5)",
            ),
            (&["-x", "5"], "-x/--session-expiry-interval needs MQTT 5"),
            (
                &["-V", "5", "-x", "soon"],
                "invalid -x/--session-expiry-interval \"soon\"",
            ),
            (
                &["-V", "5", "-D", "will", "will-delay-interval", "1"],
                "-D will needs a will (--will-topic)",
            ),
        ];
        for (line, expected) in cases {
            let e = args(line).options().unwrap_err();
            assert!(e.starts_with(expected), "{line:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let e = args(&["-V", "5", "-D", "subscribe", "subscription-identifier", "1"])
            .properties("pub", &[PropertyCommand::Publish])
            .unwrap_err();
        assert_eq!(
            e,
            "invalid -D subscribe: surgemq pub sends no SUBSCRIBE packet"
        );
    }

    #[test]
    fn bad_tls_files_name_the_flag_and_the_file() {
        let e = args(&["--cafile", "/nonexistent/ca.pem"])
            .options()
            .unwrap_err();
        assert!(
            e.starts_with("invalid --cafile: /nonexistent/ca.pem: "),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        let e = args(&["--ws", "mqtt"]).options().unwrap_err();
        assert!(e.starts_with("invalid --ws: "), "{e}");
    }
}
