//! The WebSocket codec on exact bytes: handshakes (RFC 6455's own example key), refusals,
//! frames split and joined, control frames, and the protocol errors that close.

use super::*;

fn request(path: &str, extra: &str) -> BytesMut {
    BytesMut::from(
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .as_bytes(),
    )
}

/// A masked client frame (mask 01 02 03 04) with `payload`.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![first, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    f
}

fn open_server() -> WsCodec {
    let mut ws = WsCodec::server("/mqtt");
    let (mut app, mut out) = (BytesMut::new(), BytesMut::new());
    let mut input = request("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n");
    assert!(ws.ingest(&mut input, &mut app, &mut out).unwrap().opened);
    ws
}

#[test]
fn the_upgrade_is_answered_with_the_rfc_accept_key_and_the_mqtt_subprotocol() {
    let mut ws = WsCodec::server("/mqtt");
    let (mut app, mut out) = (BytesMut::new(), BytesMut::new());
    let mut input = request("/mqtt", "Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n");
    // A frame right behind the request head is not lost.
    input.extend_from_slice(&masked(0x82, &[0xc0, 0x00]));
    let got = ws.ingest(&mut input, &mut app, &mut out).unwrap();
    assert!(got.opened && !got.closed);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqttv3.1\r\n\r\n"
    );
    assert_eq!(&app[..], [0xc0, 0x00]);
}

#[test]
fn an_any_path_server_takes_every_path_and_a_fixed_path_only_its_own() {
    for path in ["/", "/foo", "/mqtt", "/a/b?x=1"] {
        let mut ws = WsCodec::server(ANY_PATH);
        let (mut app, mut out) = (BytesMut::new(), BytesMut::new());
        let mut input = request(path, "Sec-WebSocket-Protocol: mqtt\r\n");
        input.extend_from_slice(&masked(0x82, &[0xc0, 0x00]));
        let got = ws.ingest(&mut input, &mut app, &mut out).unwrap();
        assert!(got.opened, "{path}");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
            "{path}"
        );
        assert_eq!(&app[..], [0xc0, 0x00], "{path}");
    }
    for path in ["/", "/foo"] {
        let mut ws = WsCodec::server("/mqtt");
        let (mut app, mut out) = (BytesMut::new(), BytesMut::new());
        let mut input = request(path, "");
        assert!(matches!(
            ws.ingest(&mut input, &mut app, &mut out),
            Err(WsError::Refused { status: 404, .. })
        ));
        assert!(out.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    }
}

#[test]
fn a_request_head_may_arrive_in_pieces() {
    let mut ws = WsCodec::server("/mqtt");
    let (mut app, mut out) = (BytesMut::new(), BytesMut::new());
    let whole = request("/mqtt", "");
    for piece in whole.chunks(7) {
        let mut input = BytesMut::from(piece);
        let _ = ws.ingest(&mut input, &mut app, &mut out).unwrap();
    }
    assert!(ws.is_open());
    assert!(out.starts_with(b"HTTP/1.1 101 "));
    assert!(!std::str::from_utf8(&out).unwrap().contains("Protocol:"));
}

#[test]
fn bad_upgrades_get_an_http_error_and_close() {
    let cases: [(BytesMut, &[u8], u16); 6] = [
        (request("/other", ""), b"HTTP/1.1 404 Not Found\r\n", 404),
        (
            request("/mqtt", "Sec-WebSocket-Protocol: chat\r\n"),
            b"HTTP/1.1 400 Bad Request\r\n",
            400,
        ),
        (
            BytesMut::from(&b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 junk\r\n\r\n"[..]),
            b"HTTP/1.1 400 ",
            400,
        ),
        (
            BytesMut::from(&b"POST /mqtt HTTP/1.1\r\n\r\n"[..]),
            b"HTTP/1.1 400 ",
            400,
        ),
        (
            BytesMut::from(&b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n"[..]),
            b"HTTP/1.1 426 Upgrade Required\r\n",
            426,
        ),
        (
            BytesMut::from(format!("GET /mqtt HTTP/1.1\r\nX: {}", "a".repeat(9000)).as_bytes()),
            b"HTTP/1.1 431 ",
            431,
        ),
    ];
    for (mut input, answer, status) in cases {
        let mut ws = WsCodec::server("/mqtt");
        let (mut app, mut out) = (BytesMut::new(), BytesMut::new());
        match ws.ingest(&mut input, &mut app, &mut out) {
            Err(WsError::Refused { status: s, .. }) => assert_eq!(s, status),
            other => panic!("expected HTTP {status}, got {other:?}"),
        }
        assert!(
            out.starts_with(answer),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        assert!(app.is_empty());
    }
}

#[test]
fn packets_span_frames_and_frames_hold_several_packets() {
    let mut ws = open_server();
    let (mut app, mut out) = (BytesMut::new(), BytesMut::new());
    // PINGREQ split over a binary frame and a continuation; then two PINGREQs in one frame,
    // its header split across two reads.
    let mut bytes = masked(0x02, &[0xc0]);
    bytes.extend(masked(0x80, &[0x00]));
    bytes.extend(masked(0x82, &[0xc0, 0x00, 0xc0, 0x00]));
    let (first, second) = bytes.split_at(bytes.len() - 7);
    let mut input = BytesMut::from(first);
    ws.ingest(&mut input, &mut app, &mut out).unwrap();
    assert_eq!(
        input.len(),
        3,
        "a header cut short (2 bytes and 1 of its mask) waits"
    );
    input.extend_from_slice(second);
    ws.ingest(&mut input, &mut app, &mut out).unwrap();
    assert_eq!(&app[..], [0xc0, 0x00, 0xc0, 0x00, 0xc0, 0x00]);
    assert!(out.is_empty() && input.is_empty() && ws.is_idle());
}

#[test]
fn pings_are_answered_and_a_close_is_echoed_and_ends_it() {
    let mut ws = open_server();
    let (mut app, mut out) = (BytesMut::new(), BytesMut::new());
    let mut input = BytesMut::from(&masked(0x89, b"hi")[..]);
    input.extend_from_slice(&masked(0x89, b""));
    ws.ingest(&mut input, &mut app, &mut out).unwrap();
    assert_eq!(&out[..], [0x8a, 0x02, b'h', b'i', 0x8a, 0x00]);
    out.clear();
    let mut input = BytesMut::from(&masked(0x88, &[0x03, 0xe8, b'b', b'y', b'e'])[..]);
    let got = ws.ingest(&mut input, &mut app, &mut out).unwrap();
    assert!(got.closed);
    assert_eq!(&out[..], [0x88, 0x02, 0x03, 0xe8]);
    assert!(app.is_empty());
}

#[test]
fn protocol_errors_close() {
    let huge = {
        // 127: a 64-bit length follows; 2^63 bytes, masked.
        let mut f = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
        f.extend_from_slice(&[1, 2, 3, 4]);
        f
    };
    let cases: [(Vec<u8>, &str); 5] = [
        (masked(0x81, b"text"), "text frame"),
        (vec![0x82, 0x01, 0xc0], "unmasked"),
        (masked(0xc2, &[0]), "reserved bits"),
        (huge, "2^31"),
        (masked(0x09, b""), "fragmented"),
    ];
    for (bytes, why) in cases {
        let mut ws = open_server();
        let (mut app, mut out) = (BytesMut::new(), BytesMut::new());
        let mut input = BytesMut::from(&bytes[..]);
        match ws.ingest(&mut input, &mut app, &mut out) {
            Err(WsError::Protocol(what)) => assert!(what.contains(why), "{what} for {why}"),
            other => panic!("expected a protocol error ({why}), got {other:?}"),
        }
    }
}

#[test]
fn a_client_is_told_the_status_of_a_refused_upgrade() {
    let mut out = BytesMut::new();
    let mut client = WsCodec::client("localhost", "/wrong", &mut out);
    let mut server = WsCodec::server("/mqtt");
    let mut answer = BytesMut::new();
    assert!(server
        .ingest(&mut out, &mut BytesMut::new(), &mut answer)
        .is_err());
    let err = client
        .ingest(&mut answer, &mut BytesMut::new(), &mut BytesMut::new())
        .unwrap_err();
    assert_eq!(err, WsError::Status(404));
    assert!(err.to_string().contains("HTTP 404"), "{err}");
}

#[test]
fn a_client_and_a_server_talk() {
    let (mut to_server, mut to_client) = (BytesMut::new(), BytesMut::new());
    let mut client = WsCodec::client("localhost", "/mqtt", &mut to_server);
    let mut server = WsCodec::server("/mqtt");
    let mut app = BytesMut::new();
    assert!(
        server
            .ingest(&mut to_server, &mut app, &mut to_client)
            .unwrap()
            .opened
    );
    client.emit(&[0x10, 0x00], &mut to_server);
    assert!(
        client
            .ingest(&mut to_client, &mut app, &mut BytesMut::new())
            .unwrap()
            .opened
    );
    assert_eq!(to_server[0], 0x82);
    assert_ne!(to_server[1] & 0x80, 0, "a client masks its frames");
    server
        .ingest(&mut to_server, &mut app, &mut to_client)
        .unwrap();
    assert_eq!(&app[..], [0x10, 0x00]);
    server.emit(&[0x20, 0x02, 0x00, 0x00], &mut to_client);
    assert_eq!(&to_client[..], [0x82, 0x04, 0x20, 0x02, 0x00, 0x00]);
    let mut got = BytesMut::new();
    client
        .ingest(&mut to_client, &mut got, &mut BytesMut::new())
        .unwrap();
    assert_eq!(&got[..], [0x20, 0x02, 0x00, 0x00]);
}
