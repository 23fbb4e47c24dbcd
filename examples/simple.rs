//! The client library in a few lines: connect, subscribe, publish at each QoS, print what
//! comes back, disconnect.
//!
//! Start a broker (`cargo run --release -- serve`), then:
//!
//!     cargo run --example simple [HOST:PORT]

use surgemq::client::{block_on, Client, ClientError, ClientOptions};
use surgemq::protocol::QoS;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1883".into());
    let (host, port) = target
        .rsplit_once(':')
        .ok_or("expected HOST:PORT, e.g. 127.0.0.1:1883")?;
    let options = ClientOptions::new(host, port.parse()?);

    block_on(async move {
        let (client, mut messages) = Client::connect(options).await?;
        let granted = client
            .subscribe(&[("surgemq/example/#", QoS::ExactlyOnce)])
            .await?;
        println!("subscribed to surgemq/example/#: {granted:?}");

        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let text = format!("hello at QoS {}", qos as u8);
            // Resolves once queued (QoS 0), on PUBACK (QoS 1) or on PUBCOMP (QoS 2).
            client
                .publish("surgemq/example/hello", text, qos, false)
                .await?;
        }
        for _ in 0..3 {
            let m = messages.recv().await?;
            println!(
                "{} (QoS {}): {}",
                m.topic,
                m.qos as u8,
                String::from_utf8_lossy(&m.payload)
            );
        }
        client.disconnect().await?;
        Ok::<(), ClientError>(())
    })??;
    Ok(())
}
