//! The result of a run ([`BenchReport`]) and the three ways it is shown: the plain summary, one
//! JSON object (written with [`super::json`]), and the live progress line.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::json::JsonObject;

/// Latency percentiles in microseconds, from send timestamp to arrival at a subscriber.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Latency {
    /// Percentiles of a histogram recorded in nanoseconds; `None` if it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        })
    }
}

/// A shared-subscription run: the group, and how the broker spread the messages over it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupShare {
    /// The group's name (`$share/{name}/...`).
    pub name: String,
    /// Messages each member that reported received (distinct ones), by member.
    pub per_member: Vec<u64>,
    /// The smallest and largest member's share of the messages, in percent; `None` when the
    /// group received nothing.
    pub range_pct: Option<(f64, f64)>,
}

impl GroupShare {
    pub fn new(name: &str, per_member: Vec<u64>) -> GroupShare {
        GroupShare {
            name: name.to_string(),
            range_pct: super::group::share_range(&per_member),
            per_member,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub scenario: &'static str,
    /// What the clients spoke under MQTT: "mqtt" (TCP), "mqtts", "ws" or "wss".
    pub transport: &'static str,
    /// "3.1.1" or "5".
    pub protocol: &'static str,
    pub publishers: usize,
    pub subscribers: usize,
    pub qos: u8,
    pub size: usize,
    pub threads: usize,
    /// `None`: open loop.
    pub window: Option<u64>,
    /// Open-loop target, msgs/s over all publishers.
    pub rate: Option<f64>,
    /// Subscribers had persistent sessions (CleanSession = 0).
    pub persistent: bool,
    /// Publishers had persistent sessions too.
    pub persistent_publishers: bool,
    /// `--offline`: subscribers were away while publishers ran, then reconnected and drained.
    /// `publish_secs` then runs to the last acknowledgement and `publish_rate` counts
    /// acknowledged messages (QoS 1/2); `deliver_secs` and `deliver_rate` are the drain, from
    /// the call to reconnect to the last message received; there is no latency.
    pub offline: bool,
    /// Messages publishers sent.
    pub published: u64,
    /// QoS 1/2: messages the broker acknowledged (PUBACK / PUBCOMP).
    pub acked: u64,
    /// Messages that should have reached subscribers: each publisher's count times its
    /// subscribers.
    pub expected: u64,
    /// Distinct messages that reached subscribers.
    pub delivered: u64,
    pub missing: u64,
    pub duplicated: u64,
    /// Arrived after a later message of the same stream (an ordering violation).
    pub reordered: u64,
    /// Arrived but not ours (no header, unknown publisher) or beyond what was sent.
    pub foreign: u64,
    /// From the start (after every SUBACK) to the last publish.
    pub publish_secs: f64,
    /// From the start to the last delivery.
    pub deliver_secs: f64,
    pub publish_rate: f64,
    /// Delivered msgs/s counted at subscribers: the MPS figure.
    pub deliver_rate: f64,
    pub latency: Option<Latency>,
    /// `shared`: the subscribers' group. `expected` is then each message once, and a message
    /// that reached two members (or one twice) is `duplicated`.
    pub group: Option<GroupShare>,
    /// Connection failures and protocol surprises, one line each.
    pub errors: Vec<String>,
}

impl BenchReport {
    /// A run fails when QoS 1/2 messages went missing, a client hit an error, or (shared) a
    /// message reached the group more than once.
    pub fn failed(&self) -> bool {
        (self.qos > 0 && self.missing > 0)
            || (self.group.is_some() && self.duplicated > 0)
            || !self.errors.is_empty()
    }

    /// Why [`BenchReport::failed`], in a few words; `None` when it did not fail.
    pub fn failure(&self) -> Option<String> {
        if self.qos > 0 && self.missing > 0 {
            Some(format!(
                "{} QoS {} message(s) missing",
                self.missing, self.qos
            ))
        } else if self.group.is_some() && self.duplicated > 0 {
            Some(format!(
                "{} message(s) reached the shared subscription group more than once",
                self.duplicated
            ))
        } else if !self.errors.is_empty() {
            Some(format!("{} client error(s)", self.errors.len()))
        } else {
            None
        }
    }

    /// Several lines for a person.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let flow = match (self.window, self.rate) {
            // Nothing comes back to close the loop: publishers write as fast as the socket takes.
            (_, None) if self.subscribers == 0 && self.qos == 0 => "unthrottled".into(),
            (Some(w), None) => format!("closed loop, window {w}"),
            (Some(w), Some(r)) => format!("rate {} msg/s, window {w}", num(r)),
            (None, Some(r)) => format!("open loop, rate {} msg/s", num(r)),
            (None, None) => "open loop".into(),
        };
        let _ = writeln!(
            s,
            "{}{}{}: {} {}pub -> {} {}{}sub{}, QoS {}, {} B payload, {} thread(s), {flow}",
            self.scenario,
            match self.transport {
                "mqtt" | "" => String::new(),
                other => format!(" over {other}"),
            },
            if self.protocol == "5" { ", MQTT 5" } else { "" },
            self.publishers,
            if self.persistent_publishers {
                "persistent "
            } else {
                ""
            },
            self.subscribers,
            if self.persistent { "persistent " } else { "" },
            if self.offline { "offline " } else { "" },
            match &self.group {
                Some(g) => format!(" in group {:?}", g.name),
                None => String::new(),
            },
            self.qos,
            self.size,
            self.threads
        );
        let (published, delivered) = match (self.offline, self.qos > 0) {
            (true, true) => ("acked     ", "drained   "),
            (true, false) => ("published ", "drained   "),
            (false, _) => ("published ", "delivered "),
        };
        let _ = writeln!(
            s,
            "{published} {:>12}  in {:.3} s  = {:>12} msg/s{}",
            if self.offline && self.qos > 0 {
                self.acked
            } else {
                self.published
            },
            self.publish_secs,
            num(self.publish_rate),
            match (self.offline, self.qos > 0) {
                (_, false) => String::new(),
                (false, true) => format!("  (acked {})", self.acked),
                (true, true) => format!("  (published {})", self.published),
            }
        );
        let _ = writeln!(
            s,
            "{delivered} {:>12}  in {:.3} s  = {:>12} msg/s {}",
            self.delivered,
            self.deliver_secs,
            num(self.deliver_rate),
            if self.offline {
                "(after reconnecting)"
            } else {
                "(MPS)"
            }
        );
        let _ = writeln!(
            s,
            "expected   {:>12}  missing {}  duplicated {}  reordered {}  foreign {}",
            self.expected, self.missing, self.duplicated, self.reordered, self.foreign
        );
        if let Some(g) = &self.group {
            let _ = match g.range_pct {
                Some((min, max)) => writeln!(
                    s,
                    "share      per member min {min:.1}%  max {max:.1}%  ({} members: {})",
                    g.per_member.len(),
                    g.per_member
                        .iter()
                        .map(|&n| if n < 100 {
                            n.to_string()
                        } else {
                            num(n as f64)
                        })
                        .collect::<Vec<_>>()
                        .join(" / ")
                ),
                None => writeln!(s, "share      (the group received nothing)"),
            };
        }
        match &self.latency {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "latency us p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (mean {:.1}, {} samples)",
                    l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.mean_us, l.samples
                );
            }
            None if self.offline => s.push_str("latency    (not measured offline)\n"),
            None => s.push_str("latency    (no deliveries)\n"),
        }
        for e in &self.errors {
            let _ = writeln!(s, "error: {e}");
        }
        if self.failed() {
            s.push_str("FAILED\n");
        }
        s
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        let mut o = JsonObject::default();
        o.str("scenario", self.scenario);
        o.num("publishers", self.publishers as f64);
        o.num("subscribers", self.subscribers as f64);
        o.num("qos", self.qos as f64);
        o.num("size", self.size as f64);
        o.num("threads", self.threads as f64);
        o.opt("window", self.window.map(|w| w as f64));
        o.opt("rate", self.rate);
        o.raw("persistent", if self.persistent { "true" } else { "false" });
        if self.persistent_publishers {
            o.raw("persistent_publishers", "true");
        }
        o.raw("offline", if self.offline { "true" } else { "false" });
        o.str("transport", self.transport);
        o.str("protocol", self.protocol);
        o.num("published", self.published as f64);
        o.num("acked", self.acked as f64);
        o.num("expected", self.expected as f64);
        o.num("delivered", self.delivered as f64);
        o.num("missing", self.missing as f64);
        o.num("duplicated", self.duplicated as f64);
        o.num("reordered", self.reordered as f64);
        o.num("foreign", self.foreign as f64);
        o.num("publish_secs", self.publish_secs);
        o.num("deliver_secs", self.deliver_secs);
        o.num("publish_rate", self.publish_rate);
        o.num("mps", self.deliver_rate);
        let l = self.latency.as_ref();
        o.opt("latency_p50_us", l.map(|l| l.p50_us));
        o.opt("latency_p90_us", l.map(|l| l.p90_us));
        o.opt("latency_p99_us", l.map(|l| l.p99_us));
        o.opt("latency_p999_us", l.map(|l| l.p999_us));
        o.opt("latency_max_us", l.map(|l| l.max_us));
        o.opt("latency_mean_us", l.map(|l| l.mean_us));
        if let Some(g) = &self.group {
            o.str("group", &g.name);
            o.opt("share_min_pct", g.range_pct.map(|r| r.0));
            o.opt("share_max_pct", g.range_pct.map(|r| r.1));
            o.nums("per_member", &g.per_member);
        }
        o.strs("errors", &self.errors);
        o.raw("failed", if self.failed() { "true" } else { "false" });
        o.finish()
    }
}

/// The live line: elapsed time, counts and the rates over the last interval.
pub fn progress_line(
    elapsed_secs: f64,
    published: u64,
    delivered: u64,
    publish_rate: f64,
    deliver_rate: f64,
) -> String {
    format!(
        "{elapsed_secs:6.1}s  pub {published:>11} ({:>10}/s)  recv {delivered:>11} ({:>10}/s)",
        num(publish_rate),
        num(deliver_rate)
    )
}

/// A rate or count for people: no decimals above 100, thousands separated by commas.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v.abs() < 100.0 {
        return format!("{v:.1}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if v < 0.0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BenchReport {
        BenchReport {
            scenario: "fan-in",
            transport: "mqtt",
            protocol: "3.1.1",
            publishers: 20,
            subscribers: 1,
            qos: 1,
            size: 64,
            threads: 2,
            persistent: false,
            persistent_publishers: false,
            offline: false,
            window: Some(100),
            rate: None,
            published: 2_000_000,
            acked: 2_000_000,
            expected: 2_000_000,
            delivered: 2_000_000,
            missing: 0,
            duplicated: 0,
            reordered: 0,
            foreign: 0,
            publish_secs: 2.0,
            deliver_secs: 2.5,
            publish_rate: 1_000_000.0,
            deliver_rate: 800_000.0,
            latency: Some(Latency {
                samples: 2_000_000,
                p50_us: 120.0,
                p90_us: 200.5,
                p99_us: 450.0,
                p999_us: 900.0,
                max_us: 4000.0,
                mean_us: 130.25,
            }),
            group: None,
            errors: vec![],
        }
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(num(0.0), "0.0");
        assert_eq!(num(99.94), "99.9");
        assert_eq!(num(100.0), "100");
        assert_eq!(num(1234.4), "1,234");
        assert_eq!(num(1_234_567.0), "1,234,567");
        assert_eq!(num(-1_234_567.0), "-1,234,567");
        assert_eq!(num(f64::NAN), "-");
    }

    #[test]
    fn summary_has_the_headline_numbers() {
        let s = sample().summary();
        assert!(
            s.starts_with("fan-in: 20 pub -> 1 sub, QoS 1, 64 B payload"),
            "{s}"
        );
        assert!(s.contains("800,000 msg/s (MPS)"), "{s}");
        assert!(s.contains("p99 450.0"), "{s}");
        assert!(!s.contains("FAILED"), "{s}");
        let failed = BenchReport {
            missing: 3,
            ..sample()
        };
        assert!(failed.failed());
        assert!(failed.summary().contains("FAILED"));
        // Missing QoS 0 messages are a measurement, not a failure.
        let lossy = BenchReport {
            qos: 0,
            missing: 3,
            ..sample()
        };
        assert!(!lossy.failed());
    }

    #[test]
    fn json_is_one_flat_object() {
        let j = sample().to_json();
        assert!(
            j.starts_with("{\"scenario\":\"fan-in\",\"publishers\":20,"),
            "{j}"
        );
        assert!(j.contains("\"window\":100,\"rate\":null,"), "{j}");
        assert!(j.contains("\"mps\":800000,"), "{j}");
        assert!(j.contains("\"latency_p90_us\":200.500,"), "{j}");
        assert!(j.ends_with("\"errors\":[],\"failed\":false}"), "{j}");
        assert!(!j.contains('\n'));
        let with_error = BenchReport {
            errors: vec!["client 3: \"closed\"\n".into()],
            latency: None,
            ..sample()
        };
        let j = with_error.to_json();
        assert!(j.contains("\"latency_p50_us\":null"), "{j}");
        assert!(
            j.contains("\"errors\":[\"client 3: \\\"closed\\\"\\n\"],\"failed\":true}"),
            "{j}"
        );
    }

    #[test]
    fn offline_runs_say_acked_and_drained() {
        let r = BenchReport {
            persistent: true,
            offline: true,
            latency: None,
            ..sample()
        };
        let s = r.summary();
        assert!(s.contains("1 persistent offline sub"), "{s}");
        let line = |start: &str| s.lines().find(|l| l.starts_with(start)).unwrap_or("");
        assert!(line("acked ").contains("2000000  in 2.000 s"), "{s}");
        assert!(line("drained ").contains("2000000  in 2.500 s"), "{s}");
        assert!(s.contains("(after reconnecting)"), "{s}");
        assert!(s.contains("not measured offline"), "{s}");
        let j = r.to_json();
        assert!(j.contains("\"persistent\":true,\"offline\":true,"), "{j}");
        assert!(sample().to_json().contains("\"offline\":false,"));
        assert!(!j.contains("persistent_publishers"));
        let r = BenchReport {
            persistent_publishers: true,
            ..sample()
        };
        assert!(
            r.summary().contains("20 persistent pub -> "),
            "{}",
            r.summary()
        );
        assert!(r
            .to_json()
            .contains("\"persistent\":false,\"persistent_publishers\":true,"));
    }

    #[test]
    fn shared_runs_show_the_group_and_its_shares() {
        let r = BenchReport {
            scenario: "shared",
            subscribers: 4,
            group: Some(GroupShare::new(
                "bench",
                vec![400_000, 600_000, 500_000, 500_000],
            )),
            ..sample()
        };
        let s = r.summary();
        assert!(
            s.starts_with("shared: 20 pub -> 4 sub in group \"bench\", QoS 1"),
            "{s}"
        );
        assert!(
            s.contains("share      per member min 20.0%  max 30.0%  (4 members: 400,000 / "),
            "{s}"
        );
        assert!(!r.failed(), "{s}");
        let j = r.to_json();
        assert!(
            j.contains(
                "\"group\":\"bench\",\"share_min_pct\":20,\"share_max_pct\":30,\
                 \"per_member\":[400000,600000,500000,500000],\"errors\""
            ),
            "{j}"
        );
        assert!(!sample().to_json().contains("share_"));
        // Exactly once across the group: a duplicate fails the run, at QoS 0 too.
        let twice = BenchReport {
            qos: 0,
            duplicated: 1,
            ..r.clone()
        };
        assert!(twice.failed());
        assert!(
            twice.failure().unwrap().contains("more than once"),
            "{twice:?}"
        );
        assert!(twice.summary().contains("FAILED"));
        let skewed = BenchReport {
            group: Some(GroupShare::new("g", vec![0, 12, 1_188])),
            ..r.clone()
        };
        assert!(
            skewed
                .summary()
                .contains("min 0.0%  max 99.0%  (3 members: 0 / 12 / 1,188)"),
            "{}",
            skewed.summary()
        );
        let nothing = BenchReport {
            group: Some(GroupShare::new("g", vec![0, 0])),
            ..r
        };
        assert!(nothing.summary().contains("(the group received nothing)"));
        assert!(nothing.to_json().contains("\"share_min_pct\":null"));
    }

    #[test]
    fn latency_from_histogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        assert!(Latency::from_histogram(&h).is_none());
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let l = Latency::from_histogram(&h).unwrap();
        assert_eq!(l.samples, 1000);
        assert!((l.p50_us - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99_us - 990.0).abs() < 1.0, "{l:?}");
        assert!((l.max_us - 1000.0).abs() < 1.0, "{l:?}");
    }

    #[test]
    fn progress_line_fits_a_terminal() {
        let line = progress_line(12.34, 1_000_000, 990_000, 250_000.0, 249_000.0);
        assert!(line.len() < 100, "{line}");
        assert!(line.contains("250,000/s"), "{line}");
    }
}
