//! The client library's MQTT 5 enhanced authentication (4.12) against our broker with a test
//! authenticator offering the method "ROUNDS": the client's first data must be "hello", then
//! the server challenges twice ("nonce-1", "nonce-2") and wants each challenge reversed, and
//! accepts with the data "ok". The same exchange runs again for a re-authentication.

mod client_util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use client_util::{recv, run};
use surgemq::auth::{
    AuthDecision, AuthExchange, AuthStep, Authenticator, Credentials, FileAuthenticator,
};
use surgemq::broker::{self, BrokerConfig, BrokerHandle};
use surgemq::client::{AuthChallenge, Client, ClientError, ClientOptions, EnhancedAuth};
use surgemq::protocol::{ProtocolLevel, QoS, ReasonCode};

const LIMIT: Duration = Duration::from_secs(15);

#[derive(Debug)]
struct Rounds;

#[derive(Debug)]
struct RoundsExchange {
    round: usize,
}

impl AuthExchange for RoundsExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        self.round += 1;
        match (self.round, data) {
            (1, Some(b"hello")) => AuthStep::Continue(b"nonce-1".to_vec()),
            (2, Some(b"1-ecnon")) => AuthStep::Continue(b"nonce-2".to_vec()),
            (3, Some(b"2-ecnon")) => AuthStep::Success(Some(b"ok".to_vec())),
            _ => AuthStep::Fail,
        }
    }
}

impl Authenticator for Rounds {
    fn authenticate(&self, credentials: &Credentials<'_>) -> AuthDecision {
        FileAuthenticator::allow_all().authenticate(credentials)
    }

    fn start_exchange(
        &self,
        method: &str,
        _credentials: &Credentials<'_>,
    ) -> Option<Box<dyn AuthExchange>> {
        (method == "ROUNDS").then(|| Box::new(RoundsExchange { round: 0 }) as _)
    }
}

struct Broker(Option<BrokerHandle>);

impl Broker {
    fn start() -> Broker {
        let handle = broker::start(BrokerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            shards: 2,
            authenticator: Arc::new(Rounds),
            ..BrokerConfig::default()
        })
        .expect("broker starts");
        Broker(Some(handle))
    }

    fn options(&self, client_id: &str) -> ClientOptions {
        let addr = self.0.as_ref().unwrap().local_addrs()[0];
        ClientOptions {
            protocol: ProtocolLevel::V5,
            ..client_util::options(addr, client_id)
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.shutdown();
        }
    }
}

/// What the test responder saw, and a switch that makes it answer wrong.
#[derive(Clone, Default)]
struct Responder {
    challenges: Arc<Mutex<Vec<AuthChallenge>>>,
    lie: Arc<AtomicBool>,
}

impl Responder {
    /// The method "ROUNDS" with first data "hello", answering each challenge reversed (or
    /// with nonsense once `lie` is set).
    fn auth(&self, method: &str) -> EnhancedAuth {
        let me = self.clone();
        EnhancedAuth::new(
            method,
            Some(Bytes::from_static(b"hello")),
            move |c: &AuthChallenge| {
                me.challenges.lock().unwrap().push(c.clone());
                if me.lie.load(Ordering::Relaxed) {
                    return Ok(Bytes::from_static(b"wrong"));
                }
                let data = c.data.as_deref().ok_or("a challenge without data")?;
                Ok(data.iter().rev().copied().collect::<Vec<u8>>().into())
            },
        )
    }

    fn seen(&self) -> Vec<(String, bool)> {
        self.challenges
            .lock()
            .unwrap()
            .iter()
            .map(|c| {
                let data = String::from_utf8_lossy(c.data.as_deref().unwrap_or_default());
                (data.into_owned(), c.reauthenticating)
            })
            .collect()
    }
}

#[test]
fn a_two_step_exchange_connects_and_the_connection_works() {
    let b = Broker::start();
    run(LIMIT, async {
        let responder = Responder::default();
        let options = ClientOptions {
            authentication: Some(responder.auth("ROUNDS")),
            ..b.options("auth-ok")
        };
        let (c, mut inbox) = Client::connect(options).await.expect("authenticated");
        assert_eq!(
            responder.seen(),
            [("nonce-1".into(), false), ("nonce-2".into(), false)]
        );
        let connack = c.server_properties().expect("CONNACK properties");
        assert_eq!(connack.authentication_method.as_deref(), Some("ROUNDS"));
        assert_eq!(connack.authentication_data.as_deref(), Some(&b"ok"[..]));
        c.subscribe(&[("auth/t", QoS::AtLeastOnce)]).await.unwrap();
        c.publish("auth/t", "hi", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(recv(&mut inbox).await.payload, "hi");
        c.disconnect().await.unwrap();
    });
}

#[test]
fn a_wrong_answer_or_an_unknown_method_is_refused_naming_the_reason_code() {
    let b = Broker::start();
    run(LIMIT, async {
        let responder = Responder::default();
        responder.lie.store(true, Ordering::Relaxed);
        let options = ClientOptions {
            authentication: Some(responder.auth("ROUNDS")),
            ..b.options("auth-wrong")
        };
        let e = Client::connect(options).await.unwrap_err();
        assert!(
            matches!(e, ClientError::Refused(ReasonCode::NOT_AUTHORIZED, _)),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "connection refused: not authorized (CONNACK 0x87)"
        );
        assert_eq!(responder.seen(), [("nonce-1".into(), false)]);

        let options = ClientOptions {
            authentication: Some(Responder::default().auth("SCRAM-SHA-1")),
            ..b.options("auth-unknown")
        };
        let e = Client::connect(options).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "connection refused: bad authentication method (CONNACK 0x8c)"
        );
    });
}

#[test]
fn a_responder_that_gives_up_ends_the_connection_with_its_reason() {
    let b = Broker::start();
    run(LIMIT, async {
        let auth = EnhancedAuth::new(
            "ROUNDS",
            Some(Bytes::from_static(b"hello")),
            |_: &AuthChallenge| Err("no answer to that".to_string()),
        );
        let options = ClientOptions {
            authentication: Some(auth),
            ..b.options("auth-gives-up")
        };
        let e = Client::connect(options).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "enhanced authentication \"ROUNDS\" abandoned by the client: no answer to that"
        );
    });
}

#[test]
fn reauthentication_succeeds_and_a_failed_one_ends_the_connection() {
    let b = Broker::start();
    run(LIMIT, async {
        let responder = Responder::default();
        let options = ClientOptions {
            authentication: Some(responder.auth("ROUNDS")),
            ..b.options("reauth")
        };
        let (c, mut inbox) = Client::connect(options).await.expect("authenticated");
        c.subscribe(&[("reauth/t", QoS::AtLeastOnce)])
            .await
            .unwrap();
        let data = c
            .reauthenticate(Some(Bytes::from_static(b"hello")))
            .await
            .expect("re-authenticated");
        assert_eq!(data.as_deref(), Some(&b"ok"[..]));
        assert_eq!(
            responder.seen()[2..],
            [("nonce-1".into(), true), ("nonce-2".into(), true)]
        );
        // The connection carries on as before.
        c.publish("reauth/t", "after", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(recv(&mut inbox).await.payload, "after");

        // A client that did not connect with a method cannot re-authenticate.
        let (plain, _) = Client::connect(b.options("reauth-plain")).await.unwrap();
        let e = plain.reauthenticate(None).await.unwrap_err();
        assert!(matches!(e, ClientError::Invalid { .. }), "{e}");
        plain.disconnect().await.unwrap();

        // The server refuses a wrong answer with DISCONNECT 0x87.
        responder.lie.store(true, Ordering::Relaxed);
        let e = c
            .reauthenticate(Some(Bytes::from_static(b"hello")))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::ServerDisconnect {
                    reason: ReasonCode::NOT_AUTHORIZED,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("server sent DISCONNECT 0x87 not authorized"),
            "{e}"
        );
        assert!(inbox.recv().await.is_err());
        assert!(!c.is_connected());
    });
}
