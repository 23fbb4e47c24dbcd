//! Listener sections of a Mosquitto configuration file: the default listener (`port`,
//! `bind_address` and listener options before the first `listener` line) and each `listener
//! PORT [ADDRESS]` with the options after it, turned into SurgeMQ listeners.
//!
//! Addresses: an IP address is used as it is; a host name is resolved and every address it
//! has is listened on; `bind_interface` listens on the interface's addresses, found with
//! getifaddrs (as Mosquitto does, so it needs no privilege); no address means every IPv4 and
//! every IPv6 address, as in Mosquitto: one dual-stack socket on `[::]` (IPV6_V6ONLY off,
//! Linux's default), or `[::]` and `0.0.0.0` where the host makes IPv6 sockets IPv6-only
//! (`net.ipv6.bindv6only = 1`), or `0.0.0.0` with a warning where the host has no IPv6; with
//! `socket_domain ipv4` (`ipv6`) every IPv4 (IPv6) address only. WebSocket listeners
//! take upgrades on any path, as Mosquitto's (libwebsockets) do ([`ANY_PATH`], `ws://.../*`).

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::OnceLock;

use surgemq::transport::{Listener, TlsFiles, Transport, ANY_PATH};

use super::line::{set, set_once, At, Line, Set};

/// Options that belong to the listener being configured.
const LISTENER_OPTIONS: &[&str] = &[
    "bind_interface",
    "protocol",
    "socket_domain",
    "certfile",
    "keyfile",
    "cafile",
    "require_certificate",
    "use_identity_as_username",
    "max_connections",
    "max_topic_alias",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Mqtt,
    Websockets,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Ipv4,
    Ipv6,
}

/// `password_file`, `acl_file` and `allow_anonymous`: global, or one set per listener with
/// `per_listener_settings true`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub password_file: Option<Set<PathBuf>>,
    pub acl_file: Option<Set<PathBuf>>,
    pub allow_anonymous: Option<Set<bool>>,
}

impl Security {
    /// The first option set, for messages.
    pub fn first_at(&self) -> Option<&At> {
        [
            self.password_file.as_ref().map(|s| &s.at),
            self.acl_file.as_ref().map(|s| &s.at),
            self.allow_anonymous.as_ref().map(|s| &s.at),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|at| (at.file.clone(), at.line))
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListenerSection {
    /// The `listener` line; None for the default listener.
    pub at: Option<At>,
    /// The listener's port, or the default listener's `port`.
    pub port: Option<Set<u16>>,
    /// The listener's address, or the default listener's `bind_address`.
    pub address: Option<Set<String>>,
    pub protocol: Protocol,
    pub socket_domain: Option<Domain>,
    pub bind_interface: Option<Set<String>>,
    pub certfile: Option<Set<PathBuf>>,
    pub keyfile: Option<Set<PathBuf>>,
    pub cafile: Option<Set<PathBuf>>,
    pub require_certificate: bool,
    pub use_identity_as_username: bool,
    /// -1: unlimited.
    pub max_connections: Option<Set<i64>>,
    pub max_topic_alias: Option<Set<u16>>,
    pub security: Security,
    /// The first listener option given (for the default listener: it is then opened, as in
    /// Mosquitto).
    pub touched: Option<At>,
}

impl ListenerSection {
    /// The section a `listener PORT [ADDRESS]` line opens.
    pub fn from_line(line: &Line<'_>) -> Result<ListenerSection, String> {
        let words = line.words();
        let (port, address) = match words[..] {
            [port] => (port, None),
            [port, address] => (port, Some(address)),
            [] => return Err(line.err("`listener` needs a port")),
            _ => {
                return Err(line.err(format_args!(
                    "`listener` takes a port and an address, got `{}`",
                    line.rest
                )))
            }
        };
        let port =
            match port.parse::<u16>() {
                Ok(0) => return Err(line.refuse(
                    "port 0 means a Unix socket in Mosquitto; SurgeMQ listens on TCP ports only",
                )),
                Ok(p) => p,
                Err(_) => {
                    return Err(line.err(format_args!(
                        "`listener` port must be an integer from 1 to 65535, got `{port}`"
                    )))
                }
            };
        Ok(ListenerSection {
            at: Some(line.at.clone()),
            port: Some(Set {
                value: port,
                at: line.at.clone(),
            }),
            address: address.map(|a| Set {
                value: a.to_string(),
                at: line.at.clone(),
            }),
            ..ListenerSection::default()
        })
    }

    /// Where to point at this listener in a message.
    pub fn place(&self) -> String {
        match (&self.at, &self.touched, &self.port, &self.address) {
            (Some(at), ..) => format!("the listener at {at}"),
            (None, Some(at), ..) | (None, None, Some(Set { at, .. }), _) => {
                format!("the default listener (set at {at})")
            }
            (None, None, None, Some(Set { at, .. })) => {
                format!("the default listener (set at {at})")
            }
            _ => "the default listener".to_string(),
        }
    }

    /// Applies a listener option; Ok(false) when `line` is not one.
    pub fn set(&mut self, line: &Line<'_>) -> Result<bool, String> {
        if !LISTENER_OPTIONS.contains(&line.key) {
            return Ok(false);
        }
        match line.key {
            "bind_interface" => set_once(&mut self.bind_interface, line, line.word()?.into())?,
            "protocol" => {
                self.protocol = match line.choice(&["mqtt", "websockets"])? {
                    "websockets" => Protocol::Websockets,
                    _ => Protocol::Mqtt,
                }
            }
            "socket_domain" => {
                self.socket_domain = Some(match line.choice(&["ipv4", "ipv6"])? {
                    "ipv6" => Domain::Ipv6,
                    _ => Domain::Ipv4,
                })
            }
            "certfile" => set_once(&mut self.certfile, line, line.path()?)?,
            "keyfile" => set_once(&mut self.keyfile, line, line.path()?)?,
            "cafile" => set_once(&mut self.cafile, line, line.path()?)?,
            "require_certificate" => self.require_certificate = line.bool()?,
            "use_identity_as_username" => self.use_identity_as_username = line.bool()?,
            "max_connections" => {
                let n = line.int(-1, i64::from(u32::MAX))?;
                if n == 0 {
                    return Err(
                        line.err("`max_connections` must be -1 (unlimited) or above 0, got `0`")
                    );
                }
                set(&mut self.max_connections, line, n)
            }
            "max_topic_alias" => set(&mut self.max_topic_alias, line, line.int(0, 65535)? as u16),
            _ => unreachable!(),
        }
        self.touched.get_or_insert_with(|| line.at.clone());
        Ok(true)
    }

    /// The SurgeMQ listeners this section opens: one per address. `local` is Mosquitto's
    /// local-only mode (no listener configured at all): loopback instead of every interface.
    /// `ipv6` is what the host allows (see [`ipv6_support`]); a warning is pushed when every
    /// address cannot include the IPv6 ones.
    pub fn resolve(
        &self,
        local: bool,
        ipv6: &Ipv6Support,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<Listener>, String> {
        let port = self.port.as_ref().map_or(1883, |p| p.value);
        let tls = self.tls()?;
        let transport = match (self.protocol, tls.is_some()) {
            (Protocol::Mqtt, false) => Transport::Mqtt,
            (Protocol::Mqtt, true) => Transport::Mqtts,
            (Protocol::Websockets, false) => Transport::Ws {
                path: ANY_PATH.into(),
            },
            (Protocol::Websockets, true) => Transport::Wss {
                path: ANY_PATH.into(),
            },
        };
        let listeners = self
            .addresses(port, local, ipv6, warnings)?
            .into_iter()
            .map(|addr| Listener {
                addr,
                transport: transport.clone(),
                tls: tls.clone(),
            })
            .collect();
        Ok(listeners)
    }

    fn tls(&self) -> Result<Option<TlsFiles>, String> {
        let (cert, key) = match (&self.certfile, &self.keyfile) {
            (Some(cert), Some(key)) => (cert, key),
            (Some(s), None) => {
                return Err(format!(
                    "{}: `certfile` needs a `keyfile` on the same listener",
                    s.at
                ))
            }
            (None, Some(s)) => {
                return Err(format!(
                    "{}: `keyfile` needs a `certfile` on the same listener",
                    s.at
                ))
            }
            (None, None) => {
                if let Some(ca) = &self.cafile {
                    return Err(format!(
                        "{}: `cafile` needs `certfile` and `keyfile` on the same listener (TLS)",
                        ca.at
                    ));
                }
                if self.require_certificate || self.use_identity_as_username {
                    return Err(format!(
                        "{}: `require_certificate` and `use_identity_as_username` need `certfile`, `keyfile` and `cafile` on {}",
                        self.touched.as_ref().map_or(String::new(), ToString::to_string),
                        self.place()
                    ));
                }
                return Ok(None);
            }
        };
        if (self.require_certificate || self.use_identity_as_username) && self.cafile.is_none() {
            return Err(format!(
                "{}: `require_certificate` and `use_identity_as_username` need a `cafile` on {}",
                cert.at,
                self.place()
            ));
        }
        Ok(Some(TlsFiles {
            cert: cert.value.clone(),
            key: key.value.clone(),
            ca_file: self.cafile.as_ref().map(|c| c.value.clone()),
            require_certificate: self.require_certificate,
            use_identity_as_username: self.use_identity_as_username,
        }))
    }

    fn addresses(
        &self,
        port: u16,
        local: bool,
        ipv6: &Ipv6Support,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<SocketAddr>, String> {
        let wanted = |ip: &IpAddr| match self.socket_domain {
            None => true,
            Some(Domain::Ipv4) => ip.is_ipv4(),
            Some(Domain::Ipv6) => ip.is_ipv6(),
        };
        let domain = match self.socket_domain {
            Some(Domain::Ipv4) => "IPv4 ",
            Some(Domain::Ipv6) => "IPv6 ",
            None => "",
        };
        let mut ips: Vec<IpAddr> = if let Some(name) = &self.bind_interface {
            let found = interface_addresses(&name.value)
                .map_err(|e| format!("{}: `bind_interface {}`: {e}", name.at, name.value))?;
            let Some(found) = found else {
                return Err(format!(
                    "{}: `bind_interface`: there is no network interface `{}`",
                    name.at, name.value
                ));
            };
            // As Mosquitto: the first address of each family (link-local IPv6 addresses need
            // a scope and are left out).
            let v4 = found.iter().find(|ip| ip.is_ipv4());
            let v6 = found
                .iter()
                .find(|ip| matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) != 0xfe80));
            let mut ips: Vec<IpAddr> = v4.into_iter().chain(v6).copied().filter(wanted).collect();
            if let Some(address) = &self.address {
                let given: Option<IpAddr> = address.value.parse().ok();
                ips.retain(|ip| Some(*ip) == given);
                if ips.is_empty() {
                    return Err(format!(
                        "{}: the address `{}` is not an address of the interface `{}` (bind_interface at {})",
                        address.at, address.value, name.value, name.at
                    ));
                }
            }
            if ips.is_empty() {
                return Err(format!(
                    "{}: the interface `{}` has no {domain}address to listen on",
                    name.at, name.value
                ));
            }
            ips
        } else if let Some(address) = &self.address {
            let ips: Vec<IpAddr> = match address.value.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => (address.value.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|e| {
                        format!("{}: cannot resolve `{}`: {e}", address.at, address.value)
                    })?
                    .map(|a| a.ip())
                    .collect(),
            };
            let ips: Vec<IpAddr> = ips.into_iter().filter(wanted).collect();
            if ips.is_empty() {
                return Err(format!(
                    "{}: `{}` has no {domain}address",
                    address.at, address.value
                ));
            }
            ips
        } else {
            let v4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
            let v6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
            match (self.socket_domain, local) {
                (Some(Domain::Ipv6), false) => vec![v6],
                (Some(Domain::Ipv6), true) => vec![IpAddr::V6(Ipv6Addr::LOCALHOST)],
                (Some(Domain::Ipv4), true) => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                // As Mosquitto 2's local-only mode: both loopback addresses, where IPv6 exists.
                (None, true) => match ipv6 {
                    Ipv6Support::Unavailable(_) => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                    _ => vec![
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ],
                },
                (Some(Domain::Ipv4), false) => vec![v4],
                (None, false) => match ipv6 {
                    Ipv6Support::DualStack => vec![v6],
                    Ipv6Support::V6Only => vec![v6, v4],
                    Ipv6Support::Unavailable(why) => {
                        warnings.push(format!(
                            "{}: IPv6 is not available on this host ({why}): {} listens on every IPv4 address (0.0.0.0) only",
                            self.at
                                .as_ref()
                                .or(self.touched.as_ref())
                                .map_or_else(|| "mosquitto.conf".to_string(), ToString::to_string),
                            self.place()
                        ));
                        vec![v4]
                    }
                },
            }
        };
        let mut seen = Vec::new();
        ips.retain(|ip| {
            let new = !seen.contains(ip);
            seen.push(*ip);
            new
        });
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

/// What an IPv6 socket bound to `[::]` gets on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv6Support {
    /// IPv4 connections too (as IPv4-mapped addresses): IPV6_V6ONLY is off by default.
    DualStack,
    /// IPv6 connections only (`net.ipv6.bindv6only = 1`): IPv4 needs its own socket.
    V6Only,
    /// No IPv6 socket can be made or bound (IPv6 disabled in the kernel); why.
    Unavailable(String),
}

/// This host's [`Ipv6Support`], found once by binding a socket to `[::]` on a port the kernel
/// picks and asking it for IPV6_V6ONLY (the listeners' sockets, made by glommio, keep the
/// default that the probe sees).
pub fn ipv6_support() -> &'static Ipv6Support {
    static SUPPORT: OnceLock<Ipv6Support> = OnceLock::new();
    SUPPORT.get_or_init(|| {
        let probe = match std::net::TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)) {
            Ok(probe) => probe,
            Err(e) => return Ipv6Support::Unavailable(e.to_string()),
        };
        let mut only: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt on a socket we own, into an int of the length given.
        let rc = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&probe),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&mut only as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        match (rc, only) {
            (0, 0) => Ipv6Support::DualStack,
            (0, _) => Ipv6Support::V6Only,
            _ => Ipv6Support::Unavailable(std::io::Error::last_os_error().to_string()),
        }
    })
}

/// The addresses of the network interface `name` (compared ignoring case, as Mosquitto
/// does); None when there is no such interface.
fn interface_addresses(name: &str) -> std::io::Result<Option<Vec<IpAddr>>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, which is freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut exists = false;
    let mut out = Vec::new();
    let mut node = list;
    while !node.is_null() {
        // SAFETY: `node` is an entry of the list getifaddrs returned, not freed yet; its name
        // is a NUL-terminated string and its address, when not null, a sockaddr of the
        // family it names.
        unsafe {
            let ifa = &*node;
            node = ifa.ifa_next;
            let ifname = CStr::from_ptr(ifa.ifa_name).to_bytes();
            if !ifname.eq_ignore_ascii_case(name.as_bytes()) {
                continue;
            }
            exists = true;
            if ifa.ifa_addr.is_null() {
                continue;
            }
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))));
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                }
                _ => {}
            }
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(exists.then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize) -> At {
        At {
            file: "l.conf".into(),
            line,
        }
    }

    fn section(lines: &[&str]) -> Result<ListenerSection, String> {
        let mut s = ListenerSection::from_line(&Line::parse(lines[0], at(1)).unwrap())?;
        for (i, text) in lines[1..].iter().enumerate() {
            assert!(s.set(&Line::parse(text, at(i + 2)).unwrap())?, "{text}");
        }
        Ok(s)
    }

    impl ListenerSection {
        /// On a dual-stack host, with no warning expected.
        fn resolve_here(&self, local: bool) -> Result<Vec<Listener>, String> {
            let mut warnings = Vec::new();
            let l = self.resolve(local, &Ipv6Support::DualStack, &mut warnings);
            assert_eq!(warnings, Vec::<String>::new());
            l
        }
    }

    #[test]
    fn addresses_by_ip_name_domain_and_interface() {
        let one = |lines: &[&str]| -> Vec<String> {
            section(lines)
                .unwrap()
                .resolve_here(false)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(one(&["listener 1883"]), ["mqtt://[::]:1883"]);
        assert_eq!(
            one(&["listener 1883", "socket_domain ipv6"]),
            ["mqtt://[::]:1883"]
        );
        assert_eq!(
            one(&["listener 1883", "socket_domain ipv4"]),
            ["mqtt://0.0.0.0:1883"]
        );
        assert_eq!(
            one(&["listener 8080 127.0.0.1", "protocol websockets"]),
            ["ws://127.0.0.1:8080/*"]
        );
        assert_eq!(one(&["listener 1883 ::1"]), ["mqtt://[::1]:1883"]);
        assert!(one(&["listener 1883 localhost", "socket_domain ipv4"])
            .contains(&"mqtt://127.0.0.1:1883".to_string()));
        assert_eq!(
            one(&["listener 1883", "bind_interface lo", "socket_domain ipv4"]),
            ["mqtt://127.0.0.1:1883"]
        );
        assert_eq!(
            one(&[
                "listener 1883 127.0.0.1",
                "bind_interface LO",
                "socket_domain ipv4"
            ]),
            ["mqtt://127.0.0.1:1883"]
        );
        // Local-only mode: both loopback addresses, as Mosquitto 2 binds them.
        let local = ListenerSection::default().resolve_here(true).unwrap();
        let local: Vec<String> = local.iter().map(ToString::to_string).collect();
        assert_eq!(local, ["mqtt://127.0.0.1:1883", "mqtt://[::1]:1883"]);
        let mut warnings = Vec::new();
        let no_v6 = Ipv6Support::Unavailable("test".into());
        let local = ListenerSection::default()
            .resolve(true, &no_v6, &mut warnings)
            .unwrap();
        assert_eq!(local.len(), 1);
    }

    #[test]
    fn no_address_is_every_ipv4_and_ipv6_address_as_the_host_allows() {
        let urls = |lines: &[&str], ipv6: Ipv6Support| -> (Vec<String>, Vec<String>) {
            let mut warnings = Vec::new();
            let l = section(lines)
                .unwrap()
                .resolve(false, &ipv6, &mut warnings)
                .unwrap();
            (l.iter().map(ToString::to_string).collect(), warnings)
        };
        let none = Vec::<String>::new();
        // Dual stack: one socket on [::] takes IPv4 connections too.
        assert_eq!(
            urls(&["listener 1883"], Ipv6Support::DualStack),
            (vec!["mqtt://[::]:1883".to_string()], none.clone())
        );
        // IPv6 sockets are IPv6-only here: a second socket for IPv4.
        assert_eq!(
            urls(
                &["listener 9001", "protocol websockets"],
                Ipv6Support::V6Only
            ),
            (
                vec![
                    "ws://[::]:9001/*".to_string(),
                    "ws://0.0.0.0:9001/*".to_string()
                ],
                none.clone()
            )
        );
        // No IPv6: IPv4 only, and a warning naming the listener.
        assert_eq!(
            urls(
                &["listener 1883"],
                Ipv6Support::Unavailable("Address family not supported by protocol".into())
            ),
            (
                vec!["mqtt://0.0.0.0:1883".to_string()],
                vec!["l.conf:1: IPv6 is not available on this host (Address family not supported by protocol): the listener at l.conf:1 listens on every IPv4 address (0.0.0.0) only".to_string()]
            )
        );
        // An address, or a domain, is not widened; nor is the local-only mode.
        for (lines, url) in [
            (&["listener 1883 127.0.0.1"][..], "mqtt://127.0.0.1:1883"),
            (
                &["listener 1883", "socket_domain ipv4"][..],
                "mqtt://0.0.0.0:1883",
            ),
        ] {
            let (got, warnings) = urls(lines, Ipv6Support::Unavailable("off".into()));
            assert_eq!((got, warnings), (vec![url.to_string()], none.clone()));
        }
        let mut warnings = Vec::new();
        let local = ListenerSection::default()
            .resolve(true, &Ipv6Support::Unavailable("off".into()), &mut warnings)
            .unwrap();
        assert_eq!(local[0].to_string(), "mqtt://127.0.0.1:1883");
        assert!(warnings.is_empty());
        // This host: what the probe finds (the end-to-end test binds and connects).
        eprintln!("this host: {:?}", ipv6_support());
    }

    #[test]
    fn address_errors_name_the_line() {
        let err = |lines: &[&str]| {
            section(lines)
                .and_then(|s| s.resolve_here(false))
                .unwrap_err()
        };
        assert_eq!(
            err(&["listener 1883", "bind_interface nosuch0"]),
            "l.conf:2: `bind_interface`: there is no network interface `nosuch0`"
        );
        assert_eq!(
            err(&["listener 1883 10.9.9.9", "bind_interface lo", "socket_domain ipv4"]),
            "l.conf:1: the address `10.9.9.9` is not an address of the interface `lo` (bind_interface at l.conf:2)"
        );
        assert_eq!(
            err(&["listener 1883 ::1", "socket_domain ipv4"]),
            "l.conf:1: `::1` has no IPv4 address"
        );
        assert_eq!(
            err(&["listener 0 /run/mosquitto.sock"]),
            "l.conf:1: `listener` is not supported: port 0 means a Unix socket in Mosquitto; SurgeMQ listens on TCP ports only"
        );
        assert_eq!(
            err(&["listener http"]),
            "l.conf:1: `listener` port must be an integer from 1 to 65535, got `http`"
        );
        assert_eq!(
            err(&["listener 1 2 3"]),
            "l.conf:1: `listener` takes a port and an address, got `1 2 3`"
        );
        assert_eq!(
            err(&["listener 1883", "max_connections 0"]),
            "l.conf:2: `max_connections` must be -1 (unlimited) or above 0, got `0`"
        );
    }

    #[test]
    fn tls_options_make_mqtts_and_wss() {
        let s = section(&[
            "listener 8883",
            "certfile /etc/s.pem",
            "keyfile /etc/s.key",
            "cafile /etc/ca.pem",
            "require_certificate true",
            "use_identity_as_username true",
        ])
        .unwrap();
        let l = s.resolve_here(false).unwrap();
        assert_eq!(l[0].transport, Transport::Mqtts);
        let tls = l[0].tls.as_ref().unwrap();
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert!(tls.require_certificate && tls.use_identity_as_username);
        let wss = section(&[
            "listener 8081",
            "protocol websockets",
            "certfile c",
            "keyfile k",
        ])
        .unwrap();
        assert_eq!(
            wss.resolve_here(false).unwrap()[0].transport,
            Transport::Wss {
                path: ANY_PATH.into()
            }
        );
        let err = |lines: &[&str]| {
            section(lines)
                .and_then(|s| s.resolve_here(false))
                .unwrap_err()
        };
        assert_eq!(
            err(&["listener 8883", "certfile c"]),
            "l.conf:2: `certfile` needs a `keyfile` on the same listener"
        );
        assert_eq!(
            err(&["listener 8883", "cafile ca"]),
            "l.conf:2: `cafile` needs `certfile` and `keyfile` on the same listener (TLS)"
        );
        assert_eq!(
            err(&["listener 8883", "certfile c", "keyfile k", "require_certificate true"]),
            "l.conf:2: `require_certificate` and `use_identity_as_username` need a `cafile` on the listener at l.conf:1"
        );
        assert_eq!(
            err(&["listener 8883", "certfile a", "certfile b"]),
            "l.conf:3: `certfile` given twice (first at l.conf:2)"
        );
    }
}
