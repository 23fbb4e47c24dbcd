//! MQTT 5 enhanced authentication (MQTT 5.0 4.12) through the `Authenticator` trait, with a
//! test authenticator offering the method "REVERSE": it challenges with "nonce-1" and wants
//! the challenge reversed back; it answers success with the data "ok". Exact wire bytes for
//! the AUTH exchange at CONNECT and for a re-authentication, 1 and 2 shards (the exchange runs
//! on the shard that accepted the socket, the session on the client id's home shard).

mod common;

use std::sync::Arc;

use common::*;
use surgemq::auth::{
    AuthDecision, AuthExchange, AuthStep, Authenticator, Credentials, FileAuthenticator,
};
use surgemq::broker::BrokerConfig;

#[derive(Debug)]
struct Reverse {
    /// Ordinary CONNECTs (no Authentication Method) go here.
    plain: FileAuthenticator,
}

#[derive(Debug)]
struct ReverseExchange {
    challenged: bool,
}

impl AuthExchange for ReverseExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        if !self.challenged {
            self.challenged = true;
            return AuthStep::Continue(b"nonce-1".to_vec());
        }
        if data == Some(&b"1-ecnon"[..]) {
            AuthStep::Success(Some(b"ok".to_vec()))
        } else {
            AuthStep::Fail
        }
    }
}

impl Authenticator for Reverse {
    fn authenticate(&self, credentials: &Credentials<'_>) -> AuthDecision {
        self.plain.authenticate(credentials)
    }

    fn start_exchange(
        &self,
        method: &str,
        _credentials: &Credentials<'_>,
    ) -> Option<Box<dyn AuthExchange>> {
        (method == "REVERSE").then(|| Box::new(ReverseExchange { challenged: false }) as _)
    }
}

fn broker(shards: usize) -> Broker {
    Broker::with_config(BrokerConfig {
        shards,
        authenticator: Arc::new(Reverse {
            plain: FileAuthenticator::allow_all(),
        }),
        ..test_config()
    })
}

/// Authentication Method "REVERSE" and, if given, Authentication Data.
fn auth_properties(data: Option<&[u8]>) -> Vec<u8> {
    let mut p = vec![0x15]; // Authentication Method
    p.extend(field(b"REVERSE"));
    if let Some(data) = data {
        p.push(0x16); // Authentication Data
        p.extend(field(data));
    }
    p
}

/// AUTH with a reason code and the method (and data).
fn auth(reason: u8, data: Option<&[u8]>) -> Vec<u8> {
    let props = auth_properties(data);
    let mut body = vec![reason];
    body.extend(remaining_length(props.len()));
    body.extend(props);
    frame(0xf0, &body) // AUTH: type 15, flags 0
}

#[rustfmt::skip]
const CHALLENGE: &[u8] = &[
    0xf0, 0x16,                                     // AUTH, remaining length 22
    0x18,                                           // 0x18 Continue authentication
    0x14,                                           // properties: 20 bytes
    0x15, 0x00, 0x07, b'R', b'E', b'V', b'E', b'R', b'S', b'E', // Authentication Method
    0x16, 0x00, 0x07, b'n', b'o', b'n', b'c', b'e', b'-', b'1', // Authentication Data "nonce-1"
];

/// CONNACK success with the method, the authenticator's "ok", then the usual properties.
fn connack_authenticated() -> Vec<u8> {
    let mut props = auth_properties(Some(b"ok"));
    props.extend_from_slice(&CONNACK_V5_PROPERTIES);
    let mut body = vec![0x00, 0x00]; // no session present, 0x00 Success
    body.extend(remaining_length(props.len()));
    body.extend(props);
    frame(0x20, &body)
}

#[test]
fn a_challenge_answered_right_connects_with_the_authenticators_data() {
    with_shards(|shards| {
        let b = broker(shards);
        let id = b.id_on("rev", shards - 1);
        let mut c = b.socket();
        c.send(&ConnectBuilder::v5(&id, &auth_properties(None)).build());
        c.expect_bytes(CHALLENGE);
        c.send(&auth(0x18, Some(b"1-ecnon")));
        c.expect_bytes(&connack_authenticated());
        c.ping();
        c.disconnect();
    });
}

#[test]
fn a_wrong_answer_gets_connack_0x87_and_an_unknown_method_0x8c() {
    with_shards(|shards| {
        let b = broker(shards);
        let mut c = b.socket();
        c.send(&ConnectBuilder::v5("wrong", &auth_properties(None)).build());
        c.expect_bytes(CHALLENGE);
        c.send(&auth(0x18, Some(b"nonce-1")));
        c.expect_bytes(&[0x20, 0x03, 0x00, 0x87, 0x00]); // CONNACK 0x87 Not authorized
        c.expect_closed();

        let mut props = vec![0x15];
        props.extend(field(b"SCRAM-SHA-1"));
        let mut c = b.socket();
        c.send(&ConnectBuilder::v5("unknown", &props).build());
        c.expect_bytes(&[0x20, 0x03, 0x00, 0x8c, 0x00]); // CONNACK 0x8C Bad authentication method
        c.expect_closed();

        // Something other than AUTH in the middle of the exchange: 0x82 Protocol error.
        let mut c = b.socket();
        c.send(&ConnectBuilder::v5("rude", &auth_properties(None)).build());
        c.expect_bytes(CHALLENGE);
        c.send(&[0xc0, 0x00]); // PINGREQ
        c.expect_bytes(&[0x20, 0x03, 0x00, 0x82, 0x00]);
        c.expect_closed();

        // Clients without a method are not asked anything.
        b.connect_v5(&ConnectBuilder::v5("plain", &[])).disconnect();
    });
}

#[test]
fn re_authentication_succeeds_with_auth_0x00_and_fails_with_disconnect_0x87() {
    with_shards(|shards| {
        let b = broker(shards);
        let id = b.id_on("reauth", shards - 1);
        let mut c = b.socket();
        c.send(&ConnectBuilder::v5(&id, &auth_properties(None)).build());
        c.expect_bytes(CHALLENGE);
        c.send(&auth(0x18, Some(b"1-ecnon")));
        c.expect_bytes(&connack_authenticated());

        // AUTH 0x19 Re-authenticate, the challenge, the right answer: AUTH 0x00 with "ok".
        c.send(&auth(0x19, None));
        c.expect_bytes(CHALLENGE);
        c.send(&auth(0x18, Some(b"1-ecnon")));
        c.expect_bytes(&auth(0x00, Some(b"ok")));
        c.ping();

        // Again, with a wrong answer: DISCONNECT 0x87 and the close.
        c.send(&auth(0x19, None));
        c.expect_bytes(CHALLENGE);
        c.send(&auth(0x18, Some(b"wrong")));
        c.expect_disconnect_v5(0x87);

        // A client that connected without a method may not send AUTH: 0x82.
        let mut c = b.connect_v5(&ConnectBuilder::v5("no-method", &[]));
        c.send(&auth(0x19, None));
        c.expect_disconnect_v5(0x82);
    });
}
