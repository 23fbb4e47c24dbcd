//! The reader and Mosquitto's defaults, on configuration files as Debian and Mosquitto's
//! documentation write them, and on every option's mapping, warning and error.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use toml::Value;

use super::*;

/// A directory removed when the test ends.
pub(super) struct Dir(pub(super) PathBuf);

impl Dir {
    pub(super) fn new() -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "surgemq-mosqconf-{}-{}",
            std::process::id(),
            N.fetch_add(1, AtomicOrdering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    pub(super) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Read as on a dual-stack host: a listener without an address is one on `[::]`.
pub(super) fn parse(text: &str) -> Result<MosquittoConf, String> {
    let mut conf = MosquittoConf::parse(text, Path::new("m.conf"))?;
    conf.ipv6 = Some(listener::Ipv6Support::DualStack);
    Ok(conf)
}

/// A file read as on a dual-stack host (see [`parse`]).
fn load(path: &Path) -> MosquittoConf {
    let mut conf = MosquittoConf::load(path).unwrap();
    conf.ipv6 = Some(listener::Ipv6Support::DualStack);
    conf
}

/// The TOML keys and warnings a configuration comes to.
pub(super) fn settings(text: &str) -> Result<(toml::Table, Vec<String>), String> {
    parse(text)?.settings()
}

fn urls(t: &toml::Table) -> Vec<String> {
    t["listener"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["url"].as_str().unwrap().to_string())
        .collect()
}

/// Debian's /etc/mosquitto/mosquitto.conf (mosquitto 2.0.11-1.2+deb12u2), with the include
/// directory and the paths under /var moved to `dir`.
fn debian(dir: &Dir) -> String {
    format!(
        "# Place your local configuration in /etc/mosquitto/conf.d/
#
# A full description of the configuration file is at
# /usr/share/doc/mosquitto/examples/mosquitto.conf.example

pid_file /run/mosquitto/mosquitto.pid

persistence true
persistence_location {0}/lib/

log_dest file {0}/log/mosquitto.log

include_dir {0}/conf.d
",
        dir.0.display()
    )
}

#[test]
fn debians_file_as_installed_listens_on_localhost_with_persistence() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.0.join("conf.d")).unwrap();
    dir.write(
        "conf.d/README",
        "Any files placed in this directory that have a .conf ending will be loaded\n",
    );
    let main = dir.write("mosquitto.conf", &debian(&dir));
    let conf = load(&main);
    assert_eq!(conf.files, std::slice::from_ref(&main));
    let (t, warnings) = conf.settings().unwrap();
    assert_eq!(urls(&t), ["mqtt://127.0.0.1:1883", "mqtt://[::1]:1883"]);
    assert_eq!(t["allow-anonymous"], Value::Boolean(true));
    assert_eq!(
        t["data-dir"].as_str().unwrap(),
        format!("{}/lib/", dir.0.display())
    );
    assert_eq!(
        warnings,
        [format!(
            "{}:6: `pid_file` is ignored: SurgeMQ writes no pid file (systemd tracks it: contrib/surgemq.service)",
            main.display()
        )]
    );
    let (target, _) = conf.logging.target();
    assert_eq!(
        target,
        Some(log::Target::File(dir.0.join("log/mosquitto.log")))
    );
}

#[test]
fn debians_file_with_a_conf_d_listener_and_passwords() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.0.join("conf.d")).unwrap();
    let pw = dir.write("passwd", "");
    let acl = dir.write("acl", "user alice\ntopic readwrite #\n");
    dir.write(
        "conf.d/local.conf",
        &format!(
            "listener 1883\nallow_anonymous false\npassword_file {}\nacl_file {}\n\nlistener 9001\nprotocol websockets\n",
            pw.display(),
            acl.display()
        ),
    );
    let main = dir.write("mosquitto.conf", &debian(&dir));
    let conf = load(&main);
    assert_eq!(conf.files, [main.clone(), dir.0.join("conf.d/local.conf")]);
    let (t, _) = conf.settings().unwrap();
    assert_eq!(urls(&t), ["mqtt://[::]:1883", "ws://[::]:9001/*"]);
    assert_eq!(t["allow-anonymous"], Value::Boolean(false));
    assert_eq!(t["password-file"].as_str(), pw.to_str());
    assert_eq!(t["acl-file"].as_str(), acl.to_str());
}

/// The example of the Mosquitto documentation's TLS and WebSockets sections, as people
/// combine them.
#[test]
fn a_documentation_style_file_with_tls_and_websockets() {
    let (t, warnings) = settings(
        "per_listener_settings false
allow_anonymous true

# MQTT over TLS
listener 8883
certfile /etc/mosquitto/certs/server.crt
keyfile /etc/mosquitto/certs/server.key
cafile /etc/mosquitto/ca_certificates/ca.crt
require_certificate true
use_identity_as_username true
tls_version tlsv1.2

listener 1883 127.0.0.1

listener 8081
protocol websockets
certfile /etc/mosquitto/certs/server.crt
keyfile /etc/mosquitto/certs/server.key

max_inflight_messages 20
max_queued_messages 500
sys_interval 60
log_type error
log_type warning
connection_messages true
log_timestamp true
",
    )
    .unwrap();
    assert_eq!(
        urls(&t),
        [
            "mqtts://[::]:8883",
            "mqtt://127.0.0.1:1883",
            "wss://[::]:8081/*"
        ]
    );
    let tls = t["listener"][0].as_table().unwrap();
    assert_eq!(
        tls["ca-file"].as_str(),
        Some("/etc/mosquitto/ca_certificates/ca.crt")
    );
    assert_eq!(tls["require-certificate"], Value::Boolean(true));
    assert_eq!(tls["use-identity-as-username"], Value::Boolean(true));
    assert!(t["listener"][1].get("cert").is_none());
    assert_eq!(
        t["listener"][2]["cert"].as_str(),
        Some("/etc/mosquitto/certs/server.crt")
    );
    assert_eq!(t["allow-anonymous"], Value::Boolean(true));
    assert_eq!(t["max-inflight"], Value::Integer(20));
    assert_eq!(t["max-queued-messages"], Value::Integer(500));
    assert_eq!(t["sys-interval"], Value::Integer(60));
    assert_eq!(
        warnings,
        [
            "m.conf:25: `connection_messages` is ignored: connections are logged at the debug level (--log-level debug)",
            "m.conf:26: `log_timestamp` is ignored: every log line starts with an RFC 3339 timestamp",
        ]
    );
}

#[test]
fn every_global_option_maps_to_its_key() {
    let dir = Dir::new();
    let pw = dir.write("pw", "");
    let acl = dir.write("acl", "topic read #\n");
    let (t, warnings) = settings(&format!(
        "listener 1884
password_file {}
acl_file {}
allow_anonymous true
persistence true
persistence_location {}
max_queued_messages 100
max_queued_bytes 1000000
max_inflight_messages 0
max_packet_size 2000
max_connections -1
max_keepalive 120
max_topic_alias 5
sys_interval 0
queue_qos0_messages true
persistent_client_expiration 2w
",
        pw.display(),
        acl.display(),
        dir.0.display()
    ))
    .unwrap();
    assert_eq!(warnings, Vec::<String>::new());
    let int = |k: &str| t[k].as_integer().unwrap_or_else(|| panic!("{k}"));
    assert_eq!(t["password-file"].as_str(), pw.to_str());
    assert_eq!(t["acl-file"].as_str(), acl.to_str());
    assert_eq!(t["allow-anonymous"], Value::Boolean(true));
    assert_eq!(t["data-dir"].as_str(), dir.0.to_str());
    assert_eq!(int("max-queued-messages"), 100);
    assert_eq!(int("max-queued-bytes"), 1_000_000);
    assert_eq!(int("max-inflight"), 65535);
    assert_eq!(int("max-packet-size"), 2000);
    assert_eq!(int("max-connections"), i64::MAX);
    assert_eq!(int("max-keepalive"), 120);
    assert_eq!(int("max-topic-alias"), 5);
    assert_eq!(int("sys-interval"), 0);
    assert_eq!(t["queue-qos0"], Value::Boolean(true));
    assert_eq!(int("session-expiry"), 14 * 86_400);
    // Every key is one the TOML reader knows, with the type it wants.
    let file = crate::cli::config_file::ConfigFile::from_table(t, "m.conf", PathBuf::new());
    assert_eq!(
        file.usize("max-connections").unwrap(),
        Some(i64::MAX as usize)
    );
    assert_eq!(file.u16("max-keepalive").unwrap(), Some(120));
    assert_eq!(file.listeners().unwrap().len(), 1);
}

#[test]
fn the_default_listener_port_and_bind_address() {
    let (t, warnings) = settings("port 1885\nbind_address 127.0.0.1\nlistener 1886 ::1\n").unwrap();
    assert_eq!(urls(&t), ["mqtt://127.0.0.1:1885", "mqtt://[::1]:1886"]);
    assert_eq!(
        t["allow-anonymous"],
        Value::Boolean(false),
        "a listener is configured"
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let (t, warnings) = settings("max_connections 10\nlistener 1886\n").unwrap();
    assert_eq!(urls(&t), ["mqtt://[::]:1883", "mqtt://[::]:1886"]);
    assert_eq!(
        warnings[0],
        "m.conf:1: listener options before the first `listener` line configure the default listener, which Mosquitto then opens on port 1883 of every interface; so does SurgeMQ"
    );
    // Local-only mode keeps the default listener's options, on the loopback interface.
    let (t, _) = settings("protocol websockets\nallow_anonymous false\n").unwrap();
    assert_eq!(urls(&t), ["ws://127.0.0.1:1883/*", "ws://[::1]:1883/*"]);
    assert_eq!(t["allow-anonymous"], Value::Boolean(false));
    assert_eq!(
        settings("port 1883\nlistener 1883\n").unwrap_err(),
        "m.conf:2: the listener at m.conf:2 listens on [::]:1883, as the default listener (set at m.conf:1) does"
    );
}

#[test]
fn each_file_of_include_dir_starts_in_the_default_listener() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.0.join("d")).unwrap();
    dir.write("d/b.conf", "listener 1902\n");
    dir.write("d/A.conf", "listener 1901\nprotocol websockets\n");
    dir.write("d/a.conf", "socket_domain ipv4\n");
    dir.write("d/B.conf", "include_dir /nowhere\n");
    dir.write("d/01.conf", "sys_interval 5\n");
    dir.write("d/00.conf", "sys_interval 4\n");
    dir.write("d/.conf", "bogus\n");
    dir.write("d/x.conf.dpkg-old", "bogus\n");
    let main = dir.write(
        "main.conf",
        &format!(
            "listener 1900\ninclude_dir {}\nmax_connections 5\n",
            dir.0.join("d").display()
        ),
    );
    let conf = load(&main);
    let names: Vec<_> = conf.files[1..]
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["00.conf", "01.conf", "A.conf", "a.conf", "B.conf", "b.conf"]
    );
    // a.conf's option went to the default listener, not to A.conf's listener; the main file's
    // `max_connections` after include_dir went to its own listener 1900.
    assert_eq!(
        conf.default_listener.socket_domain,
        Some(listener::Domain::Ipv4)
    );
    assert_eq!(conf.listeners[0].max_connections.as_ref().unwrap().value, 5);
    assert_eq!(conf.listeners[1].protocol, listener::Protocol::Websockets);
    assert_eq!(conf.keys["sys-interval"].value, Value::Integer(5));
    assert_eq!(
        conf.warnings,
        [format!(
            "{}:1: `include_dir` is ignored: Mosquitto reads `include_dir` only in the main configuration file",
            dir.0.join("d/B.conf").display()
        )]
    );
    assert_eq!(mosquitto_order("a.conf", "B.conf"), Ordering::Less);
    assert_eq!(mosquitto_order("A.conf", "a.conf"), Ordering::Less);
    assert_eq!(mosquitto_order("ab.conf", "a.conf"), Ordering::Greater);
}

#[test]
fn include_dir_errors_name_the_line() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.0.join("d")).unwrap();
    dir.write("d/bad.conf", "\n\nmax_inflight_mesages 3\n");
    let main = dir.write(
        "main.conf",
        &format!("include_dir {}\n", dir.0.join("d").display()),
    );
    assert_eq!(
        MosquittoConf::load(&main).unwrap_err(),
        format!(
            "{}:3: unknown option `max_inflight_mesages`",
            dir.0.join("d/bad.conf").display()
        )
    );
    let main = dir.write("main.conf", "include_dir /no/such/dir\n");
    let err = MosquittoConf::load(&main).unwrap_err();
    assert!(
        err.starts_with(&format!(
            "{}:1: cannot read include_dir /no/such/dir: ",
            main.display()
        )),
        "{err}"
    );
    let main = dir.write(
        "d/loop.conf",
        &format!("include_dir {}\n", dir.0.join("d").display()),
    );
    std::fs::remove_file(dir.0.join("d/bad.conf")).unwrap();
    assert_eq!(
        MosquittoConf::load(&main).unwrap_err(),
        format!(
            "{}:1: include_dir {} holds the main configuration file",
            main.display(),
            dir.0.join("d").display()
        )
    );
}

#[test]
fn per_listener_settings() {
    let dir = Dir::new();
    let pw = dir.write("pw", "");
    let same = format!(
        "per_listener_settings true\nlistener 1883\npassword_file {0}\nlistener 9001\nprotocol websockets\npassword_file {0}\n",
        pw.display()
    );
    let (t, _) = settings(&same).unwrap();
    assert_eq!(t["password-file"].as_str(), pw.to_str());
    assert_eq!(t["allow-anonymous"], Value::Boolean(false));
    let different = format!(
        "per_listener_settings true\nlistener 1883\npassword_file {0}\nlistener 9001\nallow_anonymous true\n",
        pw.display()
    );
    assert_eq!(
        settings(&different).unwrap_err(),
        "m.conf:1: per_listener_settings true with different password_file, acl_file or allow_anonymous for the listener at m.conf:2 and the listener at m.conf:4 is not supported: SurgeMQ applies one set of users and ACLs to every listener"
    );
    assert_eq!(
        settings("allow_anonymous true\nper_listener_settings true\nlistener 1883\n").unwrap_err(),
        "m.conf:2: `per_listener_settings true` must come before `allow_anonymous` (m.conf:1)"
    );
    assert_eq!(
        settings("per_listener_settings true\nallow_anonymous true\nlistener 1883\n").unwrap_err(),
        "m.conf:2: with per_listener_settings true this applies to the default listener (port, bind_address), which is not opened; put it after a `listener` line"
    );
    // Without per_listener_settings, security options anywhere are global.
    let (t, _) = settings("listener 1883\nlistener 1884\nallow_anonymous true\n").unwrap();
    assert_eq!(t["allow-anonymous"], Value::Boolean(true));
}

#[test]
fn per_listener_limits_become_global() {
    let (t, w) =
        settings("listener 1883\nmax_connections 10\nlistener 1884\nmax_connections 20\n").unwrap();
    assert_eq!(t["max-connections"], Value::Integer(30));
    assert_eq!(
        w,
        ["m.conf:2: `max_connections` is per listener in Mosquitto; SurgeMQ has one limit for all listeners: 30, the sum of the listeners' limits"]
    );
    let (t, w) = settings("listener 1883\nmax_connections 10\nlistener 1884\n").unwrap();
    assert_eq!(t["max-connections"], Value::Integer(i64::MAX));
    assert!(
        w[0].ends_with("one limit for all listeners: none, since some listeners have none"),
        "{w:?}"
    );
    let (t, _) =
        settings("listener 1883\nmax_topic_alias 3\nlistener 1884\nmax_topic_alias 3\n").unwrap();
    assert_eq!(t["max-topic-alias"], Value::Integer(3));
    assert_eq!(
        settings("listener 1883\nmax_topic_alias 3\nlistener 1884\nmax_topic_alias 4\n").unwrap_err(),
        "m.conf:4: `max_topic_alias` is 3 for the listener at m.conf:1 and 4 for the listener at m.conf:3: SurgeMQ has one value for all listeners"
    );
    assert_eq!(
        settings("listener 1883\nmax_topic_alias 3\nlistener 1884\n").unwrap_err(),
        "m.conf:2: `max_topic_alias` is 3 here but 10 (the default) for the listener at m.conf:3: SurgeMQ has one value for all listeners"
    );
}

#[test]
fn packet_and_message_size_limits() {
    let (t, w) = settings("message_size_limit 1000\n").unwrap();
    assert_eq!(
        t["max-packet-size"],
        Value::Integer(1000 + settings::PUBLISH_OVERHEAD)
    );
    assert_eq!(
        w,
        ["m.conf:1: `message_size_limit 1000`: SurgeMQ limits whole packets, so a packet over 66544 bytes (the payload and room for the topic) closes the connection where Mosquitto would drop the message"]
    );
    let (t, _) = settings("message_size_limit 1000\nmax_packet_size 5000\n").unwrap();
    assert_eq!(t["max-packet-size"], Value::Integer(5000));
    let (t, w) = settings("message_size_limit 0\n").unwrap();
    assert!(t.get("max-packet-size").is_none() && w.is_empty());
    assert_eq!(
        settings("max_packet_size 20\n").unwrap_err(),
        "m.conf:1: `max_packet_size` must be an integer from 64 to 268435460, got `20`"
    );
}

#[test]
fn persistence_and_queue_limits() {
    let (t, w) = settings("persistence false\npersistence_location /var/lib/mosquitto/\n").unwrap();
    assert!(t.get("data-dir").is_none());
    assert_eq!(
        w,
        ["m.conf:2: `persistence_location` is ignored: `persistence` is not true, so everything is kept in memory only"]
    );
    let (t, w) = settings("persistence true\n").unwrap();
    assert_eq!(t["data-dir"].as_str(), Some("."));
    assert!(
        w[0].starts_with("m.conf:1: `persistence true` without `persistence_location`"),
        "{w:?}"
    );
    let dir = Dir::new();
    dir.write("mosquitto.db", "");
    let (_, w) = settings(&format!(
        "persistence true\npersistence_location {}\n",
        dir.0.display()
    ))
    .unwrap();
    assert_eq!(
        w,
        [format!(
            "m.conf:2: {} is Mosquitto's: SurgeMQ does not read it (the sessions and retained messages in it do not carry over) and keeps its own files next to it",
            dir.0.join("mosquitto.db").display()
        )]
    );
    let (t, w) = settings("max_queued_messages 0\nmax_queued_bytes 0\n").unwrap();
    assert!(t.get("max-queued-messages").is_none() && t.get("max-queued-bytes").is_none());
    assert_eq!(
        w[0],
        "m.conf:1: `max_queued_messages 0` (no limit) is ignored: SurgeMQ keeps every queue bounded, so its default applies (see --max-queued-messages and --max-queued-bytes)"
    );
}
