//! A publisher and a subscriber on channel `news`: pub/sub delivers at most
//! once, in publish order, nothing invented ([`crate::check::check_pubsub`]).

use std::time::Duration;

use madsim::time::{sleep, timeout};
use rand::RngExt;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::super::network::{connect, request, server_address};
use super::super::reached;
use super::Context;
use crate::client::Value;

const CHANNEL: &str = "news";

/// Publishes increasing sequence numbers until the producers stop.
pub(crate) async fn publish(context: Context, mut rng: Xoshiro256PlusPlus) {
    let shared = &context.shared;
    let mut sequence = 0u64;
    let mut connection = 0u64;
    loop {
        if shared.lock().expect("shared").stop_producers {
            return;
        }
        let Some(mut client) = connect(server_address()).await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        connection += 1;
        loop {
            sleep(Duration::from_millis(rng.random_range(2..40))).await;
            if shared.lock().expect("shared").stop_producers {
                return;
            }
            sequence += 1;
            shared
                .lock()
                .expect("shared")
                .pubsub
                .published
                .insert(sequence, connection);
            let number = sequence.to_string();
            match request(&mut client, shared, &["PUBLISH", CHANNEL, &number]).await {
                Some(Value::Int(receivers)) if receivers > 0 => {
                    reached(shared, "message published to a subscriber")
                }
                Some(_) => {}
                None => break,
            }
        }
    }
}

/// Subscribes and records what arrives; each connection is a session.
pub(crate) async fn subscribe(context: Context) {
    let shared = &context.shared;
    let mut session = 0u64;
    loop {
        if shared.lock().expect("shared").stop_all {
            return;
        }
        let Some(mut client) = connect(server_address()).await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        session += 1;
        if request(&mut client, shared, &["SUBSCRIBE", CHANNEL])
            .await
            .is_none()
        {
            continue;
        }
        loop {
            if shared.lock().expect("shared").stop_all {
                return;
            }
            // Silence is not a failure: wait again unless the connection
            // broke.
            let message = match timeout(Duration::from_secs(1), client.read()).await {
                Err(_) => continue,
                Ok(Err(_)) => break,
                Ok(Ok(message)) => message,
            };
            let items = message.items();
            let sequence = items
                .get(2)
                .and_then(|value| value.text().parse::<u64>().ok());
            match (items.first().map(Value::text).as_deref(), sequence) {
                (Some("message"), Some(sequence)) => {
                    shared
                        .lock()
                        .expect("shared")
                        .pubsub
                        .received
                        .push((session, sequence));
                }
                _ => {
                    shared
                        .lock()
                        .expect("shared")
                        .pubsub
                        .garbled
                        .push(format!("{message:?}"));
                }
            }
        }
    }
}
