//! The shapes of traffic a run can have ([`Scenario`]): how many publishers and subscribers
//! each has, from its defaults and the flags that apply to it, which topics the publishers use
//! and what the subscribers subscribe to.
//!
//! `shared` is fan-in with the subscribers in one MQTT shared-subscription group
//! (`$share/{group}/{filter}`, MQTT 5 section 4.8.2, also accepted from 3.1.1 clients by the
//! common brokers): every message goes to exactly one member, so the group as a whole must
//! receive each message once.

use super::config::{invalid, BenchConfig, BenchError, DEFAULT_CLIENTS, MAX_CLIENTS};

/// Members of a `shared` group, and its publishers, unless told otherwise.
pub const DEFAULT_SHARED: usize = 4;
/// The `shared` group's name unless told otherwise (`--group`).
pub const DEFAULT_GROUP: &str = "bench";

/// The five shapes of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// One publisher, one subscriber, one topic.
    Pair,
    /// N publishers each on its own topic, subscribers on a wildcard over all of them.
    FanIn,
    /// Publishers on one topic, N subscribers to it.
    FanOut,
    /// N clients, each publishing on its own topic and subscribed to all of them (its own too).
    Mesh,
    /// N publishers each on its own topic, M subscribers in one shared-subscription group on a
    /// wildcard over all of them: each message reaches one member.
    Shared,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Pair,
        Scenario::FanIn,
        Scenario::FanOut,
        Scenario::Mesh,
        Scenario::Shared,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Pair => "pair",
            Scenario::FanIn => "fan-in",
            Scenario::FanOut => "fan-out",
            Scenario::Mesh => "mesh",
            Scenario::Shared => "shared",
        }
    }

    /// Subscribers share one subscription: each message goes to one of them, not to all.
    pub fn is_shared(self) -> bool {
        self == Scenario::Shared
    }

    /// Each publisher's topic and the subscribers' filter, under `prefix` (unique per run).
    pub(super) fn topics(
        self,
        prefix: &str,
        publishers: usize,
        group: &str,
    ) -> (Vec<String>, String) {
        match self {
            Scenario::Pair | Scenario::FanOut => (
                vec![format!("{prefix}/t"); publishers],
                format!("{prefix}/t"),
            ),
            Scenario::FanIn | Scenario::Mesh => (
                (0..publishers).map(|i| format!("{prefix}/{i}")).collect(),
                format!("{prefix}/+"),
            ),
            Scenario::Shared => (
                (0..publishers).map(|i| format!("{prefix}/{i}")).collect(),
                format!("$share/{group}/{prefix}/+"),
            ),
        }
    }
}

/// A shared subscription's group name (ShareName): at least one character, none of `/`, `+`,
/// `#` (MQTT 5, 4.8.2).
pub fn check_group(group: &str) -> Result<(), BenchError> {
    if group.is_empty() {
        return Err(invalid("group", "must not be empty"));
    }
    if let Some(c) = group.chars().find(|c| matches!(c, '/' | '+' | '#')) {
        return Err(invalid(
            "group",
            format!("{group:?} contains '{c}' (a share name may not contain '/', '+' or '#')"),
        ));
    }
    Ok(())
}

fn count(flag: &'static str, v: usize, min: usize) -> Result<usize, BenchError> {
    if v < min || v > MAX_CLIENTS {
        return Err(invalid(
            flag,
            format!("must be between {min} and {MAX_CLIENTS}, got {v}"),
        ));
    }
    Ok(v)
}

impl BenchConfig {
    /// `--offline` needs sessions that outlive a connection, and subscribers on connections of
    /// their own.
    pub(super) fn check_offline(&self) -> Result<(), BenchError> {
        if !self.offline {
            return Ok(());
        }
        if !self.persistent {
            return Err(invalid(
                "offline",
                "needs --persistent (only a persistent session keeps messages while away)",
            ));
        }
        if self.publish_only {
            return Err(invalid(
                "offline",
                "needs subscribers to drain; not with --publish-only",
            ));
        }
        match self.scenario {
            Scenario::Mesh => Err(invalid(
                "offline",
                "not used by mesh: its clients publish and subscribe on one connection",
            )),
            // MQTT 5 (4.8.2) leaves it to the broker which offline member's session keeps a
            // message, or whether one does: nothing to compare brokers on.
            Scenario::Shared => Err(invalid(
                "offline",
                "not used by shared: where a broker keeps messages for a group whose members \
                 are all away is its own choice",
            )),
            _ => Ok(()),
        }
    }

    /// Publishers and subscribers of the scenario, from its defaults and the flags that apply.
    pub(super) fn shape(&self) -> Result<(usize, usize), BenchError> {
        let name = self.scenario.name();
        if self.group.is_some() && !self.scenario.is_shared() {
            return Err(invalid(
                "group",
                format!("not used by {name}: only shared subscribes as a group"),
            ));
        }
        let refuse = |flag: &'static str, v: Option<usize>, why: &str| match v {
            Some(_) => Err(invalid(flag, format!("not used by {name}: {why}"))),
            None => Ok(()),
        };
        match self.scenario {
            Scenario::Pair => {
                let why = "it has one publisher and one subscriber";
                refuse("clients", self.clients, why)?;
                refuse("publishers", self.publishers, why)?;
                refuse("subscribers", self.subscribers, why)?;
                Ok((1, 1))
            }
            Scenario::FanIn | Scenario::Shared => {
                if self.clients.is_some() && self.publishers.is_some() {
                    return Err(invalid(
                        "clients",
                        "give --clients or --publishers, not both",
                    ));
                }
                let (publishers, subscribers) = match self.scenario {
                    Scenario::Shared => (DEFAULT_SHARED, DEFAULT_SHARED),
                    _ => (DEFAULT_CLIENTS, 1),
                };
                let n = self.clients.or(self.publishers).unwrap_or(publishers);
                let flag = if self.clients.is_some() {
                    "clients"
                } else {
                    "publishers"
                };
                Ok((
                    count(flag, n, 1)?,
                    count("subscribers", self.subscribers.unwrap_or(subscribers), 1)?,
                ))
            }
            Scenario::FanOut => {
                if self.clients.is_some() && self.subscribers.is_some() {
                    return Err(invalid(
                        "clients",
                        "give --clients or --subscribers, not both",
                    ));
                }
                let n = self.clients.or(self.subscribers).unwrap_or(DEFAULT_CLIENTS);
                let flag = if self.clients.is_some() {
                    "clients"
                } else {
                    "subscribers"
                };
                Ok((
                    count("publishers", self.publishers.unwrap_or(1), 1)?,
                    count(flag, n, 1)?,
                ))
            }
            Scenario::Mesh => {
                let why = "every mesh client both publishes and subscribes; use --clients";
                refuse("publishers", self.publishers, why)?;
                refuse("subscribers", self.subscribers, why)?;
                let n = count("clients", self.clients.unwrap_or(DEFAULT_CLIENTS), 1)?;
                Ok((n, n))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::config::tests::{config, flag_of};
    use crate::bench::Load;

    fn shared() -> BenchConfig {
        config(Scenario::Shared)
    }

    #[test]
    fn shared_is_fan_in_into_one_group() {
        let p = shared().plan().unwrap();
        assert_eq!(
            (p.publishers, p.subscribers),
            (DEFAULT_SHARED, DEFAULT_SHARED)
        );
        assert!(!p.shared_connections);
        let prefix = p.topics[0].strip_suffix("/0").unwrap();
        assert_eq!(p.topics[3], format!("{prefix}/3"));
        assert_eq!(p.filter, format!("$share/{DEFAULT_GROUP}/{prefix}/+"));
        let p = BenchConfig {
            clients: Some(20),
            subscribers: Some(3),
            group: Some("workers".into()),
            load: Load::Messages(10),
            ..shared()
        }
        .plan()
        .unwrap();
        assert_eq!((p.publishers, p.subscribers), (20, 3));
        assert!(
            p.filter.starts_with("$share/workers/surgemq-bench/"),
            "{}",
            p.filter
        );
    }

    #[test]
    fn group_names_follow_the_share_name_rules() {
        for bad in ["", "a/b", "g+", "#"] {
            let c = BenchConfig {
                group: Some(bad.into()),
                ..shared()
            };
            assert_eq!(flag_of(c), "group", "{bad:?}");
        }
        check_group("g-1_x.y").unwrap();
        // Only shared has a group; --clients and --publishers are one flag there too.
        let pair = BenchConfig {
            group: Some("g".into()),
            ..BenchConfig::default()
        };
        assert_eq!(flag_of(pair), "group");
        let both = BenchConfig {
            clients: Some(2),
            publishers: Some(2),
            ..shared()
        };
        assert_eq!(flag_of(both), "clients");
        let offline = BenchConfig {
            persistent: true,
            offline: true,
            ..shared()
        };
        assert_eq!(flag_of(offline), "offline");
    }
}
