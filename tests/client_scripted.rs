//! The client against a scripted server: a std thread that accepts, reads exact bytes and
//! answers what the script says. It checks what a real broker cannot show: when PINGREQ goes
//! out, what happens without PINGRESP, the bytes resent after a reconnect (DUP, PUBREL, in
//! order), and how protocol violations and silence are reported.

mod client_util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use client_util::run;
use client_util::scripted::{read_packet, serve};
use surgemq::client::{Client, ClientError, ClientOptions, ProtocolError};
use surgemq::protocol::{DecodeError, QoS};

const LIMIT: Duration = Duration::from_secs(10);

/// CONNACK: accepted, with the session-present flag.
fn connack(session_present: bool) -> [u8; 4] {
    [0x20, 0x02, u8::from(session_present), 0x00]
}

fn options(addr: SocketAddr) -> ClientOptions {
    ClientOptions {
        client_id: "scripted".into(),
        connect_timeout: Duration::from_secs(2),
        ..ClientOptions::new("127.0.0.1", addr.port())
    }
}

#[test]
fn pingreq_when_idle_and_timeout_without_pingresp() {
    let (addr, server) = serve(vec![Box::new(|s| {
        assert_eq!(read_packet(s)[0], 0x10, "CONNECT");
        s.write_all(&connack(false)).unwrap();
        let t0 = Instant::now();
        // Keepalive 1 s: a PINGREQ within about a second of silence, then again.
        for _ in 0..2 {
            assert_eq!(read_packet(s), [0xc0, 0x00], "PINGREQ");
            s.write_all(&[0xd0, 0x00]).unwrap();
        }
        let elapsed = t0.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_millis(2900),
            "two pings in {elapsed:?}"
        );
        // The third PINGREQ gets no answer; the client gives up and closes.
        assert_eq!(read_packet(s), [0xc0, 0x00]);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "nothing after the unanswered PINGREQ");
    })]);
    run(LIMIT, async move {
        let (client, mut messages) = Client::connect(ClientOptions {
            keep_alive: 1,
            ping_timeout: Some(Duration::from_millis(500)),
            ..options(addr)
        })
        .await
        .unwrap();
        let err = messages.recv().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 0.5 s waiting for PINGRESP"
        );
        assert!(!client.is_connected());
        // Requests after the end fail with the same reason.
        let late = client.publish("t", "x", QoS::AtLeastOnce, false).await;
        assert!(matches!(late, Err(ClientError::Timeout { .. })));
    });
    server.join().unwrap();
}

#[test]
fn reconnect_resends_unacknowledged_publish_with_dup_and_pubrel_in_order() {
    let (addr, server) = serve(vec![
        Box::new(|s| {
            let connect = read_packet(s);
            assert_eq!(connect[9], 0x00, "CleanSession = 0");
            s.write_all(&connack(false)).unwrap();
            // QoS 1 id 1 (left unacknowledged) and QoS 2 id 2 (PUBREC, then the line drops).
            assert_eq!(
                read_packet(s),
                [0x32, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, b'1']
            );
            assert_eq!(
                read_packet(s),
                [0x34, 0x06, 0x00, 0x01, b'b', 0x00, 0x02, b'2']
            );
            s.write_all(&[0x50, 0x02, 0x00, 0x02]).unwrap();
            assert_eq!(read_packet(s), [0x62, 0x02, 0x00, 0x02], "PUBREL 2");
        }),
        Box::new(|s| {
            assert_eq!(read_packet(s)[0], 0x10, "CONNECT again");
            s.write_all(&connack(true)).unwrap();
            // MQTT-4.4.0-1: the unacknowledged PUBLISH again with DUP, then the PUBREL.
            assert_eq!(
                read_packet(s),
                [0x3a, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, b'1']
            );
            assert_eq!(read_packet(s), [0x62, 0x02, 0x00, 0x02]);
            s.write_all(&[0x40, 0x02, 0x00, 0x01, 0x70, 0x02, 0x00, 0x02])
                .unwrap();
            assert_eq!(read_packet(s), [0xe0, 0x00], "DISCONNECT");
        }),
    ]);
    run(LIMIT, async move {
        let (client, _messages) = Client::connect(ClientOptions {
            clean_session: false,
            reconnect_interval: Some(Duration::from_millis(100)),
            ..options(addr)
        })
        .await
        .unwrap();
        let first = client.publish("a", "1", QoS::AtLeastOnce, false);
        let second = client.publish("b", "2", QoS::ExactlyOnce, false);
        first.await.unwrap();
        second.await.unwrap();
        assert!(client.session_present());
        client.disconnect().await.unwrap();
    });
    server.join().unwrap();
}

#[test]
fn malformed_packet_from_the_server_is_a_protocol_violation() {
    let (addr, server) = serve(vec![Box::new(|s| {
        read_packet(s);
        s.write_all(&connack(false)).unwrap();
        // PUBLISH QoS 1 with packet identifier 0.
        s.write_all(&[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00])
            .unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    })]);
    run(LIMIT, async move {
        let (_client, mut messages) = Client::connect(options(addr)).await.unwrap();
        let err = messages.recv().await.unwrap_err();
        assert!(matches!(
            err,
            ClientError::Protocol(ProtocolError::Decode(DecodeError::ZeroPacketId))
        ));
        assert_eq!(
            err.to_string(),
            "protocol violation by the server: packet identifier 0 (MQTT-2.3.1-1)"
        );
    });
    server.join().unwrap();
}

#[test]
fn silent_server_and_closed_port() {
    let (addr, server) = serve(vec![Box::new(|s| {
        read_packet(s);
        // Never answers CONNACK.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    })]);
    run(LIMIT, async move {
        let err = Client::connect(ClientOptions {
            connect_timeout: Duration::from_millis(300),
            ..options(addr)
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "timed out after 0.3 s waiting for CONNACK");
    });
    server.join().unwrap();

    // Nothing listens on a port we just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    run(LIMIT, async move {
        let err = Client::connect(ClientOptions::new("127.0.0.1", port))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot connect to 127.0.0.1:{port}: Connection refused (os error 111)")
        );
    });
}

#[test]
fn reconnect_to_a_server_without_the_session_subscribes_again() {
    let (addr, server) = serve(vec![
        Box::new(|s| {
            read_packet(s);
            s.write_all(&connack(false)).unwrap();
            // "a/+" QoS 1 granted, "x" refused.
            #[rustfmt::skip]
            assert_eq!(read_packet(s), [
                0x82, 0x0c, 0x00, 0x01,
                0x00, 0x03, b'a', b'/', b'+', 0x01,
                0x00, 0x01, b'x', 0x02,
            ]);
            s.write_all(&[0x90, 0x04, 0x00, 0x01, 0x01, 0x80]).unwrap();
        }),
        Box::new(|s| {
            read_packet(s);
            s.write_all(&connack(false)).unwrap();
            // The granted filter only, with a fresh packet id.
            #[rustfmt::skip]
            assert_eq!(read_packet(s), [
                0x82, 0x08, 0x00, 0x02,
                0x00, 0x03, b'a', b'/', b'+', 0x01,
            ]);
            s.write_all(&[0x90, 0x03, 0x00, 0x02, 0x01]).unwrap();
            // PUBLISH QoS 0 "a/b" "hi": the client still receives.
            s.write_all(&[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'])
                .unwrap();
            assert_eq!(read_packet(s), [0xe0, 0x00], "DISCONNECT");
        }),
    ]);
    run(LIMIT, async move {
        let (client, mut messages) = Client::connect(ClientOptions {
            reconnect_interval: Some(Duration::from_millis(100)),
            ..options(addr)
        })
        .await
        .unwrap();
        let codes = client
            .subscribe(&[("a/+", QoS::AtLeastOnce), ("x", QoS::ExactlyOnce)])
            .await
            .unwrap();
        assert_eq!(codes[1], surgemq::protocol::SubscribeReturnCode::FAILURE);
        let m = messages.recv().await.unwrap();
        assert_eq!((&*m.topic, &m.payload[..]), ("a/b", &b"hi"[..]));
        client.disconnect().await.unwrap();
    });
    server.join().unwrap();
}

#[test]
fn slow_reader_gets_every_message_and_the_server_every_ack() {
    const N: u16 = 200;
    let (addr, server) = serve(vec![Box::new(|s| {
        read_packet(s);
        s.write_all(&connack(false)).unwrap();
        let mut burst = Vec::new();
        for id in 1..=N {
            // PUBLISH QoS 1 "t", id, payload = id
            let [hi, lo] = id.to_be_bytes();
            burst.extend_from_slice(&[0x32, 0x07, 0x00, 0x01, b't', hi, lo, hi, lo]);
        }
        s.write_all(&burst).unwrap();
        for id in 1..=N {
            let [hi, lo] = id.to_be_bytes();
            assert_eq!(read_packet(s), [0x40, 0x02, hi, lo], "PUBACK in order");
        }
        assert_eq!(read_packet(s), [0xe0, 0x00]);
    })]);
    run(LIMIT, async move {
        let (client, mut messages) = Client::connect(ClientOptions {
            message_buffer: 4,
            // No PINGREQ in the middle of the server's strict PUBACK reads.
            keep_alive: 0,
            ..options(addr)
        })
        .await
        .unwrap();
        for id in 1..=N {
            let m = messages.recv().await.unwrap();
            assert_eq!(&m.payload[..], &id.to_be_bytes());
            if id % 50 == 0 {
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
        client.disconnect().await.unwrap();
    });
    server.join().unwrap();
}
