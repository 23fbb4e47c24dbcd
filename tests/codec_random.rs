//! Randomized robustness test of the decoder: a million frames of random bytes and of valid
//! packets mangled in the ways a broken or hostile peer would (bit flips, truncation, inserted
//! and deleted bytes, corrupted length fields, packets glued together), fed to `decode` in
//! random chunk sizes. The decoder must never panic, never grow the read buffer, consume
//! nothing when it asks for more, agree with `frame_len`, and only return packets that
//! re-encode to something it decodes back to the same packet.
//!
//! Half the frames are fed as MQTT 3.1.1, half as MQTT 5 (whose templates carry properties and
//! reason codes). The seed is printed; rerun a failure with `SURGEMQ_CODEC_SEED=<seed> cargo test --test
//! codec_random`. `SURGEMQ_CODEC_FRAMES` changes the number of frames.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use surgemq::protocol::{
    decode, frame_len, Ack, Auth, ByteStr, ConnAck, Connect, DecodeError, Disconnect, LastWill,
    Packet, Properties, ProtocolLevel, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscribeReturnCode, UnsubAck, Unsubscribe,
};

const DEFAULT_FRAMES: u64 = 1_000_000;
/// How far beyond the input size the read buffer's capacity may be: none, in fact, since the
/// test preallocates the input size and the decoder must never reserve.
const CAPACITY_SLACK: usize = 0;

/// xorshift64*: tiny, fast in debug builds, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform enough in `0..n` for `n > 0`.
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn qos(rng: &mut Rng) -> QoS {
    QoS::from_u8(rng.below(3) as u8).unwrap()
}

fn id(rng: &mut Rng) -> u16 {
    1 + rng.below(u16::MAX as usize) as u16
}

const ALPHABET: &[&str] = &["a", "b", "/", "é", "€", "😀", "z", "0", "+", "#", " "];

/// A valid topic filter: levels from the alphabet without wildcards, or `+`, and maybe a last
/// `#` level (MQTT-4.7.1-2/-3); never empty (MQTT-4.7.3-1).
fn filter(rng: &mut Rng) -> ByteStr {
    let mut levels: Vec<String> = (0..rng.below(4))
        .map(|_| {
            if rng.chance(25) {
                "+".to_string()
            } else {
                string(rng, true).replace('/', "")
            }
        })
        .collect();
    if levels.is_empty() || rng.chance(25) {
        levels.push("#".to_string());
    }
    ByteStr::from(levels.join("/"))
}

fn string(rng: &mut Rng, topic_name: bool) -> ByteStr {
    let len = usize::from(topic_name) + rng.below(6);
    let mut s = String::new();
    while s.chars().count() < len {
        let c = ALPHABET[rng.below(ALPHABET.len())];
        if !(topic_name && (c == "+" || c == "#")) {
            s.push_str(c);
        }
    }
    ByteStr::from(s)
}

fn binary(rng: &mut Rng, max: usize) -> Bytes {
    let len = rng.below(max + 1);
    (0..len).map(|_| rng.byte()).collect::<Vec<u8>>().into()
}

/// A random valid packet of a random type.
fn valid_packet(rng: &mut Rng) -> Packet {
    match rng.below(14) {
        0 => {
            let level = if rng.chance(50) {
                ProtocolLevel::V31
            } else {
                ProtocolLevel::V311
            };
            let username = rng.chance(50).then(|| string(rng, false));
            let password = (rng.chance(50) && (username.is_some() || level == ProtocolLevel::V31))
                .then(|| binary(rng, 8));
            Packet::Connect(Box::new(Connect {
                level,
                bridge: false,
                clean_session: rng.chance(50),
                keep_alive: rng.byte().into(),
                client_id: string(rng, false),
                will: rng.chance(50).then(|| LastWill {
                    topic: string(rng, true),
                    payload: binary(rng, 8),
                    qos: qos(rng),
                    retain: rng.chance(50),
                    properties: None,
                }),
                username,
                password,
                properties: None,
            }))
        }
        1 => Packet::ConnAck(ConnAck {
            session_present: rng.chance(50),
            code: [
                ReasonCode::SUCCESS,
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                ReasonCode::SERVER_UNAVAILABLE,
                ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                ReasonCode::NOT_AUTHORIZED,
            ][rng.below(6)],
            properties: None,
        }),
        2 => {
            let qos = qos(rng);
            // Mostly small, sometimes past 127 bytes for a two-byte remaining length.
            let max_payload = if rng.chance(10) { 200 } else { 12 };
            Packet::Publish(Publish {
                // DUP at QoS 0 is malformed (MQTT-3.3.1-2).
                dup: qos != QoS::AtMostOnce && rng.chance(20),
                qos,
                retain: rng.chance(20),
                topic: string(rng, true),
                packet_id: if qos == QoS::AtMostOnce { 0 } else { id(rng) },
                payload: binary(rng, max_payload),
                properties: None,
            })
        }
        3 => Packet::PubAck(Ack::new(id(rng))),
        4 => Packet::PubRec(Ack::new(id(rng))),
        5 => Packet::PubRel(Ack::new(id(rng))),
        6 => Packet::PubComp(Ack::new(id(rng))),
        7 => Packet::Subscribe(Subscribe {
            packet_id: id(rng),
            filters: (0..1 + rng.below(3))
                .map(|_| (filter(rng), qos(rng).into()))
                .collect(),
            properties: None,
        }),
        8 => Packet::SubAck(SubAck {
            packet_id: id(rng),
            return_codes: (0..1 + rng.below(3))
                .map(|_| {
                    if rng.chance(25) {
                        SubscribeReturnCode::FAILURE
                    } else {
                        SubscribeReturnCode::Success(qos(rng))
                    }
                })
                .collect(),
            properties: None,
        }),
        9 => Packet::Unsubscribe(Unsubscribe {
            packet_id: id(rng),
            filters: (0..1 + rng.below(3)).map(|_| filter(rng)).collect(),
            properties: None,
        }),
        10 => Packet::UnsubAck(UnsubAck::new(id(rng))),
        11 => Packet::PingReq,
        12 => Packet::PingResp,
        _ => Packet::Disconnect(Disconnect::NORMAL),
    }
}

/// Some MQTT 5 properties: user properties and those of `extra` (a packet's own).
fn v5_properties(
    rng: &mut Rng,
    extra: impl FnOnce(&mut Rng, &mut Properties),
) -> Option<Box<Properties>> {
    if rng.chance(30) {
        return None;
    }
    let mut p = Properties::default();
    for _ in 0..rng.below(3) {
        p.user_properties
            .push((string(rng, false), string(rng, false)));
    }
    extra(rng, &mut p);
    (p != Properties::default()).then(|| Box::new(p))
}

fn reason(rng: &mut Rng, codes: &[u8]) -> ReasonCode {
    ReasonCode(codes[rng.below(codes.len())])
}

/// A random valid MQTT 5 packet: a 3.1.1 one given what MQTT 5 adds to its type.
fn valid_packet_v5(rng: &mut Rng) -> Packet {
    let reason_string = |rng: &mut Rng, p: &mut Properties| {
        if rng.chance(50) {
            p.reason_string = Some(string(rng, false));
        }
    };
    match valid_packet(rng) {
        Packet::Connect(mut c) => {
            c.level = ProtocolLevel::V5;
            c.properties = v5_properties(rng, |rng, p| {
                p.session_expiry_interval = rng.chance(50).then(|| rng.next() as u32);
                p.receive_maximum = rng.chance(50).then(|| 1 + rng.below(65535) as u16);
                p.authentication_method = rng.chance(20).then(|| string(rng, false));
            });
            if let Some(w) = &mut c.will {
                w.properties = v5_properties(rng, |rng, p| {
                    p.will_delay_interval = rng.chance(50).then(|| rng.byte().into());
                    p.payload_format_utf8 = rng.chance(50).then(|| rng.chance(50));
                });
            }
            Packet::Connect(c)
        }
        Packet::ConnAck(mut a) => {
            a.code = reason(rng, &[0x00, 0x80, 0x84, 0x87, 0x8c, 0x97, 0x9f]);
            a.properties = v5_properties(rng, |rng, p| {
                p.maximum_qos = rng.chance(50).then_some(QoS::AtLeastOnce);
                p.topic_alias_maximum = rng.chance(50).then(|| rng.byte().into());
                p.assigned_client_identifier = rng.chance(30).then(|| string(rng, false));
            });
            Packet::ConnAck(a)
        }
        Packet::Publish(mut p) => {
            p.properties = v5_properties(rng, |rng, props| {
                props.message_expiry_interval = rng.chance(50).then(|| rng.byte().into());
                props.topic_alias = rng.chance(30).then(|| 1 + rng.byte() as u16);
                props.content_type = rng.chance(30).then(|| string(rng, false));
                props.correlation_data = rng.chance(30).then(|| binary(rng, 6));
                if rng.chance(30) {
                    props
                        .subscription_identifiers
                        .push(1 + rng.below(1 << 20) as u32);
                }
            });
            Packet::Publish(p)
        }
        Packet::PubAck(a) | Packet::PubRec(a) if rng.chance(50) => Packet::PubRec(Ack {
            reason: reason(rng, &[0x00, 0x10, 0x80, 0x87, 0x97]),
            properties: v5_properties(rng, reason_string),
            ..a
        }),
        Packet::PubRel(a) | Packet::PubComp(a) => Packet::PubComp(Ack {
            reason: reason(rng, &[0x00, 0x92]),
            properties: v5_properties(rng, reason_string),
            ..a
        }),
        Packet::Subscribe(mut s) => {
            for (_, o) in &mut s.filters {
                o.no_local = rng.chance(50);
                o.retain_as_published = rng.chance(50);
                o.retain_handling = [
                    RetainHandling::SendAtSubscribe,
                    RetainHandling::SendIfNew,
                    RetainHandling::DoNotSend,
                ][rng.below(3)];
            }
            s.properties = v5_properties(rng, |rng, p| {
                if rng.chance(50) {
                    p.subscription_identifiers.push(1 + rng.below(1000) as u32);
                }
            });
            Packet::Subscribe(s)
        }
        Packet::SubAck(mut s) => {
            for c in &mut s.return_codes {
                if *c == SubscribeReturnCode::FAILURE && rng.chance(50) {
                    *c = SubscribeReturnCode::Failure(reason(
                        rng,
                        &[0x87, 0x8f, 0x97, 0x9e, 0xa1, 0xa2],
                    ));
                }
            }
            s.properties = v5_properties(rng, reason_string);
            Packet::SubAck(s)
        }
        Packet::Unsubscribe(mut u) => {
            u.properties = v5_properties(rng, |_, _| {});
            Packet::Unsubscribe(u)
        }
        Packet::UnsubAck(u) => Packet::UnsubAck(UnsubAck {
            reasons: (0..1 + rng.below(3))
                .map(|_| reason(rng, &[0x00, 0x11, 0x80, 0x87]))
                .collect(),
            properties: v5_properties(rng, reason_string),
            ..u
        }),
        Packet::Disconnect(_) if rng.chance(50) => Packet::Auth(Auth {
            reason: reason(rng, &[0x00, 0x18, 0x19]),
            properties: v5_properties(rng, |rng, p| {
                p.authentication_method = Some(string(rng, false));
                p.authentication_data = rng.chance(50).then(|| binary(rng, 8));
            }),
        }),
        Packet::Disconnect(_) => Packet::Disconnect(Disconnect {
            reason: reason(rng, &[0x00, 0x04, 0x81, 0x82, 0x8e, 0x93, 0x94, 0x97]),
            properties: v5_properties(rng, |rng, p| {
                p.session_expiry_interval = rng.chance(50).then(|| rng.byte().into());
                reason_string(rng, p);
            }),
        }),
        other => other,
    }
}

/// Mangles `frame` in place with one of the mutations a broken peer produces.
fn mutate(rng: &mut Rng, frame: &mut Vec<u8>, templates: &[Vec<u8>]) {
    let n = frame.len();
    match rng.below(8) {
        0 if n > 0 => {
            let i = rng.below(n);
            frame[i] ^= 1 << rng.below(8);
        }
        1 if n > 0 => frame.truncate(rng.below(n)),
        2 => {
            let i = rng.below(n + 1);
            frame.insert(i, rng.byte());
        }
        3 if n > 0 => {
            frame.remove(rng.below(n));
        }
        4 if n > 1 => {
            // Corrupt the Remaining Length: any byte of it, or a continuation bit.
            let i = 1 + rng.below(n.min(5) - 1);
            frame[i] = if rng.chance(50) {
                rng.byte()
            } else {
                frame[i] ^ 0x80
            };
        }
        5 if n > 0 => {
            let i = rng.below(n);
            frame[i] = rng.byte();
        }
        6 => frame.extend_from_slice(&templates[rng.below(templates.len())]),
        _ if n > 0 => {
            // Interesting values where lengths, flags and identifiers live.
            let i = rng.below(n.min(16));
            frame[i] = [0x00, 0x01, 0x02, 0x03, 0x7f, 0x80, 0xff][rng.below(7)];
        }
        _ => frame.push(rng.byte()),
    }
}

fn error_name(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::MalformedRemainingLength => "MalformedRemainingLength",
        DecodeError::PacketTooLarge { .. } => "PacketTooLarge",
        DecodeError::ReservedPacketType(_) => "ReservedPacketType",
        DecodeError::InvalidFlags { .. } => "InvalidFlags",
        DecodeError::InvalidQoS => "InvalidQoS",
        DecodeError::DupAtQoS0 => "DupAtQoS0",
        DecodeError::ZeroPacketId => "ZeroPacketId",
        DecodeError::InvalidProtocolName(_) => "InvalidProtocolName",
        DecodeError::UnsupportedProtocolLevel(_) => "UnsupportedProtocolLevel",
        DecodeError::ConnectReservedFlag => "ConnectReservedFlag",
        DecodeError::WillFlagsWithoutWill => "WillFlagsWithoutWill",
        DecodeError::InvalidWillQoS => "InvalidWillQoS",
        DecodeError::PasswordWithoutUsername => "PasswordWithoutUsername",
        DecodeError::InvalidUtf8 => "InvalidUtf8",
        DecodeError::NullCharacter => "NullCharacter",
        DecodeError::ControlCharacter(_) => "ControlCharacter",
        DecodeError::EmptyTopic => "EmptyTopic",
        DecodeError::WildcardInTopicName => "WildcardInTopicName",
        DecodeError::EmptyTopicFilter => "EmptyTopicFilter",
        DecodeError::InvalidTopicFilter(_) => "InvalidTopicFilter",
        DecodeError::EmptySubscribe => "EmptySubscribe",
        DecodeError::EmptyUnsubscribe => "EmptyUnsubscribe",
        DecodeError::InvalidSubscribeOptions(_) => "InvalidSubscribeOptions",
        DecodeError::InvalidConnAckFlags(_) => "InvalidConnAckFlags",
        DecodeError::InvalidConnectReturnCode(_) => "InvalidConnectReturnCode",
        DecodeError::InvalidSubAckReturnCode(_) => "InvalidSubAckReturnCode",
        DecodeError::MalformedPacket { .. } => "MalformedPacket",
        DecodeError::InvalidReasonCode { .. } => "InvalidReasonCode",
        DecodeError::MalformedVarInt(_) => "MalformedVarInt",
        DecodeError::UnknownProperty(_) => "UnknownProperty",
        DecodeError::PropertyNotAllowed { .. } => "PropertyNotAllowed",
        DecodeError::DuplicateProperty(_) => "DuplicateProperty",
        DecodeError::InvalidPropertyValue { .. } => "InvalidPropertyValue",
        DecodeError::TopicAliasZero => "TopicAliasZero",
        DecodeError::EmptyTopicWithoutAlias => "EmptyTopicWithoutAlias",
        DecodeError::ReservedSubscriptionOptions(_) => "ReservedSubscriptionOptions",
        DecodeError::InvalidRetainHandling => "InvalidRetainHandling",
    }
}

/// A decoded packet must encode, and decode back to itself from exactly those bytes.
fn check_reencode(p: &Packet, level: ProtocolLevel, seed: u64, frame_no: u64) {
    let mut out = BytesMut::new();
    if let Err(e) = p.encode(&mut out, level) {
        panic!("seed {seed} frame {frame_no}: decoded {p:?} does not encode: {e}");
    }
    assert_eq!(
        out.len(),
        p.encoded_len(level),
        "seed {seed} frame {frame_no}"
    );
    match decode(&mut out, usize::MAX, level) {
        Ok(Some(ref q)) if q == p && out.is_empty() => {}
        other => panic!("seed {seed} frame {frame_no}: {p:?} re-decodes as {other:?}"),
    }
}

#[derive(Default)]
struct Stats {
    frames: u64,
    bytes: u64,
    decoded: BTreeMap<&'static str, u64>,
    errors: BTreeMap<&'static str, u64>,
}

/// Feeds one frame to `decode` in random chunks and checks every invariant on the way.
fn feed(rng: &mut Rng, frame: &[u8], level: ProtocolLevel, seed: u64, stats: &mut Stats) {
    let max = match rng.below(4) {
        0 => 1 + rng.below(64),
        1 => frame.len(),
        _ => 1 << 20,
    };
    let mut buf = BytesMut::with_capacity(frame.len());
    let limit = buf.capacity().max(frame.len()) + CAPACITY_SLACK;
    let mut fed = 0;
    while fed < frame.len() {
        let left = frame.len() - fed;
        let chunk = if rng.chance(50) {
            left
        } else {
            1 + rng.below(left.min(8))
        };
        buf.extend_from_slice(&frame[fed..fed + chunk]);
        fed += chunk;
        loop {
            let before = buf.len();
            let header = frame_len(&buf, max, level);
            match decode(&mut buf, max, level) {
                Ok(Some(p)) => {
                    assert_eq!(
                        header,
                        Ok(Some(before - buf.len())),
                        "seed {seed} frame {}: frame_len disagrees with decode",
                        stats.frames
                    );
                    check_reencode(&p, level, seed, stats.frames);
                    *stats.decoded.entry(p.packet_type().name()).or_default() += 1;
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "seed {seed}: Ok(None) consumed bytes");
                    assert!(
                        matches!(header, Ok(None)) || matches!(header, Ok(Some(n)) if n > before),
                        "seed {seed} frame {}: frame_len {header:?} but decode waits",
                        stats.frames
                    );
                    break;
                }
                Err(e) => {
                    if let Err(h) = &header {
                        assert_eq!(h, &e, "seed {seed}: frame_len and decode disagree");
                    }
                    *stats.errors.entry(error_name(&e)).or_default() += 1;
                    return;
                }
            }
            assert!(
                buf.capacity() <= limit,
                "seed {seed}: capacity {} for {} input bytes",
                buf.capacity(),
                frame.len()
            );
        }
        assert!(
            buf.capacity() <= limit,
            "seed {seed}: capacity {} for {} input bytes",
            buf.capacity(),
            frame.len()
        );
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn random_and_mutated_frames_never_break_the_decoder() {
    let seed = env_u64("SURGEMQ_CODEC_SEED").unwrap_or_else(|| {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        (t.as_nanos() as u64) | 1
    });
    let frames = env_u64("SURGEMQ_CODEC_FRAMES").unwrap_or(DEFAULT_FRAMES);
    println!("codec_random: seed {seed} (rerun with SURGEMQ_CODEC_SEED={seed}), {frames} frames");
    let mut rng = Rng(seed.max(1));

    let template = |rng: &mut Rng, level: ProtocolLevel| {
        let p = if level.is_v5() {
            valid_packet_v5(rng)
        } else {
            valid_packet(rng)
        };
        let mut b = BytesMut::new();
        p.encode(&mut b, level).unwrap();
        b.to_vec()
    };
    let templates_v3: Vec<Vec<u8>> = (0..512)
        .map(|_| template(&mut rng, ProtocolLevel::V311))
        .collect();
    let templates_v5: Vec<Vec<u8>> = (0..512)
        .map(|_| template(&mut rng, ProtocolLevel::V5))
        .collect();

    let start = Instant::now();
    let mut stats = Stats::default();
    let mut frame = Vec::with_capacity(1024);
    while stats.frames < frames {
        frame.clear();
        let (level, templates) = if rng.chance(50) {
            (ProtocolLevel::V5, &templates_v5)
        } else {
            (ProtocolLevel::V311, &templates_v3)
        };
        if rng.chance(15) {
            let len = rng.below(48);
            frame.extend((0..len).map(|_| rng.byte()));
        } else {
            frame.extend_from_slice(&templates[rng.below(templates.len())]);
            // Some frames stay valid, which checks the happy path under random chunking.
            for _ in 0..rng.below(4) {
                mutate(&mut rng, &mut frame, templates);
            }
        }
        feed(&mut rng, &frame, level, seed, &mut stats);
        stats.frames += 1;
        stats.bytes += frame.len() as u64;
    }
    let elapsed = start.elapsed();
    println!(
        "codec_random: {} frames, {} bytes in {:.2?}",
        stats.frames, stats.bytes, elapsed
    );
    println!("decoded: {:?}", stats.decoded);
    println!("errors:  {:?}", stats.errors);

    // The test is only worth its time if the mutations reach every packet type and most rules.
    if frames >= DEFAULT_FRAMES {
        assert_eq!(
            stats.decoded.len(),
            15,
            "packet types decoded: {:?}",
            stats.decoded
        );
        assert!(
            stats.errors.len() >= 28,
            "error variants hit: {:?}",
            stats.errors
        );
    }
}
