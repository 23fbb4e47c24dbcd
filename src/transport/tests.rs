//! A server layer and a client layer talking through memory: TLS, WebSockets and both, with a
//! certificate made for the test.

use super::*;
use std::path::PathBuf;
use std::sync::Arc;

/// A self-signed certificate for "localhost" and its key, as PEM files.
pub fn test_cert(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("surgemq-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
    (c, k)
}

fn pair(tls: bool, ws: bool, name: &str) -> (Layer, Layer, BytesMut) {
    let mut to_server = BytesMut::new();
    let (server_tls, client_tls) = if tls {
        let (cert, key) = test_cert(name);
        let server = tls::server_config(&TlsFiles {
            cert: cert.clone(),
            key,
            ..TlsFiles::default()
        })
        .unwrap();
        let client = tls::client_config(&ClientTls {
            ca_file: Some(cert),
            ..ClientTls::default()
        })
        .unwrap();
        let s = rustls::ServerConnection::new(server).unwrap();
        let c =
            rustls::ClientConnection::new(client, tls::server_name("localhost").unwrap()).unwrap();
        (Some(s.into()), Some(c.into()))
    } else {
        (None, None)
    };
    let (server_ws, client_ws) = if ws {
        // The client's upgrade request is its first plaintext.
        let mut request = BytesMut::new();
        let client = WsCodec::client("localhost", "/mqtt", &mut request);
        to_server = request;
        (Some(WsCodec::server("/mqtt")), Some(client))
    } else {
        (None, None)
    };
    let mut client = Layer::new(client_tls, client_ws);
    let mut first = BytesMut::new();
    if !to_server.is_empty() {
        // Sent through the client's layer below WebSockets (TLS, if any).
        let request = std::mem::take(&mut to_server);
        match &mut client.tls {
            Some(t) => t.writer().write_all(&request).unwrap(),
            None => first = request,
        }
    }
    if let Some(t) = &mut client.tls {
        while t.wants_write() {
            t.write_tls(&mut (&mut first).writer()).unwrap();
        }
    }
    (Layer::new(server_tls, server_ws), client, first)
}

/// Moves bytes both ways until neither side has anything to say; returns what each side
/// received as MQTT bytes.
fn pump(server: &mut Layer, client: &mut Layer, mut to_server: BytesMut) -> (BytesMut, BytesMut) {
    let (mut server_app, mut client_app) = (BytesMut::new(), BytesMut::new());
    for _ in 0..20 {
        let mut to_client = BytesMut::new();
        server
            .ingest(&to_server, &mut server_app, &mut to_client)
            .unwrap();
        to_server = BytesMut::new();
        client
            .ingest(&to_client, &mut client_app, &mut to_server)
            .unwrap();
        if to_server.is_empty() && to_client.is_empty() {
            break;
        }
    }
    (server_app, client_app)
}

fn round_trip(tls: bool, ws: bool, name: &str) {
    let (mut server, mut client, first) = pair(tls, ws, name);
    pump(&mut server, &mut client, first);
    assert!(
        !server.handshaking() && !client.handshaking(),
        "{name}: handshakes done"
    );
    let mut to_server = BytesMut::new();
    client
        .emit(&[0x10, 0x02, 0xaa, 0xbb], &mut to_server)
        .unwrap();
    let (server_app, _) = pump(&mut server, &mut client, to_server);
    assert_eq!(&server_app[..], [0x10, 0x02, 0xaa, 0xbb], "{name}");
    let mut to_client = BytesMut::new();
    server
        .emit(&[0x20, 0x02, 0x00, 0x00], &mut to_client)
        .unwrap();
    let mut client_app = BytesMut::new();
    client
        .ingest(&to_client, &mut client_app, &mut BytesMut::new())
        .unwrap();
    assert_eq!(&client_app[..], [0x20, 0x02, 0x00, 0x00], "{name}");
    assert!(server.is_idle() && client.is_idle(), "{name}");
    // Goodbye: the server's close reaches the client as the end of the transport.
    let mut bye = BytesMut::new();
    server.close(&mut bye);
    let got = client
        .ingest(&bye, &mut client_app, &mut BytesMut::new())
        .unwrap();
    assert!(got.closed, "{name}");
}

#[test]
fn mqtt_bytes_cross_every_transport() {
    round_trip(true, false, "mqtts");
    round_trip(false, true, "ws");
    round_trip(true, true, "wss");
}

#[test]
fn messages_larger_than_rustls_buffers_cross_tls() {
    for ws in [false, true] {
        let (mut server, mut client, first) = pair(true, ws, &format!("big{ws}"));
        pump(&mut server, &mut client, first);
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let mut to_client = BytesMut::new();
        server.emit(&big, &mut to_client).unwrap();
        let mut got = BytesMut::new();
        client
            .ingest(&to_client, &mut got, &mut BytesMut::new())
            .unwrap();
        assert_eq!(got.len(), big.len(), "wss: {ws}");
        assert!(got[..] == big[..], "wss: {ws}");
    }
}

#[test]
fn plaintext_on_a_tls_layer_is_an_error_not_a_panic() {
    let (mut server, _, _) = pair(true, false, "plain-on-tls");
    let mut out = BytesMut::new();
    // A CONNECT where a ClientHello should be.
    let connect = [
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 0,
    ];
    let err = server.ingest(&connect, &mut BytesMut::new(), &mut out);
    assert!(matches!(err, Err(TransportError::Tls(_))), "{err:?}");
}

#[test]
fn listeners_parse_from_urls_and_bare_addresses() {
    let l = |s: &str| s.parse::<Listener>();
    assert_eq!(l("127.0.0.1:1883").unwrap().transport, Transport::Mqtt);
    assert_eq!(
        l("mqtt://127.0.0.1:1883").unwrap().transport,
        Transport::Mqtt
    );
    assert_eq!(
        l("mqtts://0.0.0.0:8883").unwrap().transport,
        Transport::Mqtts
    );
    assert_eq!(
        l("ws://127.0.0.1:8080").unwrap().transport,
        Transport::Ws {
            path: "/mqtt".into()
        }
    );
    assert_eq!(
        l("wss://[::1]:8081/x/y").unwrap(),
        Listener {
            addr: "[::1]:8081".parse().unwrap(),
            transport: Transport::Wss {
                path: "/x/y".into()
            },
            tls: None,
        }
    );
    assert_eq!(
        l("wss://[::1]:8081/x/y").unwrap().to_string(),
        "wss://[::1]:8081/x/y"
    );
    // `/*`: a WebSocket listener that takes any path, written back as it was given.
    let any = l("ws://0.0.0.0:8080/*").unwrap();
    assert_eq!(
        any.transport,
        Transport::Ws {
            path: ANY_PATH.into()
        }
    );
    assert_eq!(any.to_string(), "ws://0.0.0.0:8080/*");
    for bad in [
        "http://1.2.3.4:80",
        "mqtt://host:1883",
        "mqtt://1.2.3.4:1883/p",
        "1.2.3.4",
    ] {
        assert!(l(bad).is_err(), "{bad}");
    }
    let _ = Arc::new(());
}

/// A WebSocket-only connection pays nothing for TLS: rustls' connection (over 1 KiB) is boxed,
/// not held inline in every `Layer` (see perf/results/2026-11-30-idle-memory-boxed-tls.md).
#[test]
fn layer_holds_no_tls_state_inline() {
    let layer = std::mem::size_of::<Layer>();
    let inline_tls = std::mem::size_of::<rustls::Connection>();
    eprintln!("Layer: {layer} B, rustls::Connection: {inline_tls} B");
    assert!(layer < inline_tls, "Layer is {layer} B");
    assert!(layer <= 256, "Layer is {layer} B");
}
