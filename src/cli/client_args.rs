//! The connection flags `surgemq pub` and `surgemq sub` share, spelled as Mosquitto's
//! `mosquitto_pub` / `mosquitto_sub` spell them (`-h` is the host, so help is `--help` only),
//! and their translation into validated [`ClientOptions`]. Every error names the flag.
//!
//! Transports as mosquitto_pub chooses them: TLS with `--cafile`, `--cert`/`--key`,
//! `--insecure`, `--tls-version`, `--tls-use-os-certs`, an `mqtts://` or `wss://` URL (`-L`),
//! or `-p 8883`; WebSockets with `--ws [PATH]` or a `ws://` / `wss://` URL. The port defaults
//! to 8883 with TLS, 1883 without (WebSockets included, as with mosquitto_pub).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgAction, Args, ValueEnum};
use surgemq::client::{ClientError, ClientOptions, TlsOptions, TlsVersion, Transport, Will};
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

    /// The options these flags describe, validated, TLS files read; errors name the flag.
    pub fn options(&self) -> Result<ClientOptions, String> {
        if self.persistent && self.id.as_deref().unwrap_or("").is_empty() {
            return Err("-c/--disable-clean-session needs a client id (-i)".into());
        }
        let (transport, tls, defaults) = self.transport()?;
        let will = match &self.will_topic {
            Some(topic) => {
                validate_topic_name(topic).map_err(|e| format!("invalid --will-topic: {e}"))?;
                Some(Will::new(
                    topic.clone(),
                    Bytes::from(self.will_payload.clone().unwrap_or_default()),
                    qos(self.will_qos),
                    self.will_retain,
                ))
            }
            None => None,
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
            protocol: match self.protocol {
                Version::Mqttv31 => ProtocolLevel::V31,
                Version::Mqttv311 => ProtocolLevel::V311,
            },
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
