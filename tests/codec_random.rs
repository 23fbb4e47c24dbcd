//! Randomized robustness test of the decoder: a million frames of random bytes and of valid
//! packets mangled in the ways a broken or hostile peer would (bit flips, truncation, inserted
//! and deleted bytes, corrupted length fields, packets glued together), fed to `decode` in
//! random chunk sizes. The decoder must never panic, never grow the read buffer, consume
//! nothing when it asks for more, agree with `frame_len`, and only return packets that
//! re-encode to something it decodes back to the same packet.
//!
//! The seed is printed; rerun a failure with `SURGEMQ_CODEC_SEED=<seed> cargo test --test
//! codec_random`. `SURGEMQ_CODEC_FRAMES` changes the number of frames.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use surgemq::protocol::{
    decode, frame_len, ByteStr, ConnAck, Connect, ConnectReturnCode, DecodeError, LastWill, Packet,
    PacketType, ProtocolLevel, Publish, QoS, SubAck, Subscribe, SubscribeReturnCode, Unsubscribe,
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
                clean_session: rng.chance(50),
                keep_alive: rng.byte().into(),
                client_id: string(rng, false),
                will: rng.chance(50).then(|| LastWill {
                    topic: string(rng, true),
                    payload: binary(rng, 8),
                    qos: qos(rng),
                    retain: rng.chance(50),
                }),
                username,
                password,
            }))
        }
        1 => Packet::ConnAck(ConnAck {
            session_present: rng.chance(50),
            code: [
                ConnectReturnCode::Accepted,
                ConnectReturnCode::UnacceptableProtocolVersion,
                ConnectReturnCode::IdentifierRejected,
                ConnectReturnCode::ServerUnavailable,
                ConnectReturnCode::BadUsernameOrPassword,
                ConnectReturnCode::NotAuthorized,
            ][rng.below(6)],
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
            })
        }
        3 => Packet::PubAck(id(rng)),
        4 => Packet::PubRec(id(rng)),
        5 => Packet::PubRel(id(rng)),
        6 => Packet::PubComp(id(rng)),
        7 => Packet::Subscribe(Subscribe {
            packet_id: id(rng),
            filters: (0..1 + rng.below(3))
                .map(|_| (filter(rng), qos(rng)))
                .collect(),
        }),
        8 => Packet::SubAck(SubAck {
            packet_id: id(rng),
            return_codes: (0..1 + rng.below(3))
                .map(|_| {
                    if rng.chance(25) {
                        SubscribeReturnCode::Failure
                    } else {
                        SubscribeReturnCode::Success(qos(rng))
                    }
                })
                .collect(),
        }),
        9 => Packet::Unsubscribe(Unsubscribe {
            packet_id: id(rng),
            filters: (0..1 + rng.below(3)).map(|_| filter(rng)).collect(),
        }),
        10 => Packet::UnsubAck(id(rng)),
        11 => Packet::PingReq,
        12 => Packet::PingResp,
        _ => Packet::Disconnect,
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
    }
}

/// A decoded packet must encode, and decode back to itself from exactly those bytes.
fn check_reencode(p: &Packet, seed: u64, frame_no: u64) {
    let mut out = BytesMut::new();
    if let Err(e) = p.encode(&mut out) {
        panic!("seed {seed} frame {frame_no}: decoded {p:?} does not encode: {e}");
    }
    assert_eq!(out.len(), p.encoded_len(), "seed {seed} frame {frame_no}");
    match decode(&mut out, usize::MAX) {
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
fn feed(rng: &mut Rng, frame: &[u8], seed: u64, stats: &mut Stats) {
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
            let header = frame_len(&buf, max);
            match decode(&mut buf, max) {
                Ok(Some(p)) => {
                    assert_eq!(
                        header,
                        Ok(Some(before - buf.len())),
                        "seed {seed} frame {}: frame_len disagrees with decode",
                        stats.frames
                    );
                    check_reencode(&p, seed, stats.frames);
                    *stats.decoded.entry(type_name(p.packet_type())).or_default() += 1;
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

fn type_name(t: PacketType) -> &'static str {
    match t {
        PacketType::Connect => "CONNECT",
        PacketType::ConnAck => "CONNACK",
        PacketType::Publish => "PUBLISH",
        PacketType::PubAck => "PUBACK",
        PacketType::PubRec => "PUBREC",
        PacketType::PubRel => "PUBREL",
        PacketType::PubComp => "PUBCOMP",
        PacketType::Subscribe => "SUBSCRIBE",
        PacketType::SubAck => "SUBACK",
        PacketType::Unsubscribe => "UNSUBSCRIBE",
        PacketType::UnsubAck => "UNSUBACK",
        PacketType::PingReq => "PINGREQ",
        PacketType::PingResp => "PINGRESP",
        PacketType::Disconnect => "DISCONNECT",
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

    let templates: Vec<Vec<u8>> = (0..512)
        .map(|_| {
            let p = valid_packet(&mut rng);
            let mut b = BytesMut::new();
            p.encode(&mut b).unwrap();
            b.to_vec()
        })
        .collect();

    let start = Instant::now();
    let mut stats = Stats::default();
    let mut frame = Vec::with_capacity(1024);
    while stats.frames < frames {
        frame.clear();
        if rng.chance(15) {
            let len = rng.below(48);
            frame.extend((0..len).map(|_| rng.byte()));
        } else {
            frame.extend_from_slice(&templates[rng.below(templates.len())]);
            // Some frames stay valid, which checks the happy path under random chunking.
            for _ in 0..rng.below(4) {
                mutate(&mut rng, &mut frame, &templates);
            }
        }
        feed(&mut rng, &frame, seed, &mut stats);
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
            14,
            "packet types decoded: {:?}",
            stats.decoded
        );
        assert!(
            stats.errors.len() >= 20,
            "error variants hit: {:?}",
            stats.errors
        );
    }
}
