//! Producers and consumers of the stream `s` and its group `g`, and a
//! reader blocked on `s`: the workload the invariants of [`crate::check`]
//! judge.

use std::sync::Arc;
use std::time::Duration;

use madsim::time::{sleep, timeout};
use rand::RngExt;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::super::network::{connect, request, server_address};
use super::super::{count, note};
use super::Context;
use crate::check::{self, parse_id, Id};
use crate::client::Value;

/// A producer: `XADD s * v <unique value>` until the producers stop.
pub(crate) async fn produce(producer: u32, context: Context, rng: Xoshiro256PlusPlus) {
    let shared = Arc::clone(&context.shared);
    produce_until_stopped(producer, context, rng).await;
    shared.lock().expect("shared").producers_done += 1;
}

async fn produce_until_stopped(producer: u32, context: Context, mut rng: Xoshiro256PlusPlus) {
    let Context {
        shared,
        started,
        disconnect,
    } = context;
    let address = server_address();
    let mut sequence = 0u64;
    'connection: loop {
        if shared.lock().expect("shared").stop_producers {
            return;
        }
        let Some(mut client) = connect(address).await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            if shared.lock().expect("shared").stop_producers {
                return;
            }
            sequence += 1;
            let value = format!("p{producer}-{sequence}");
            shared
                .lock()
                .expect("shared")
                .history
                .sent
                .insert(value.clone(), (producer, sequence));
            if rng.random_bool(disconnect) {
                // Send, then hang up before the reply.
                let _ = timeout(
                    Duration::from_millis(1),
                    client.call(&["XADD", "s", "*", "v", &value]),
                )
                .await;
                note(
                    &shared,
                    started,
                    format!("producer {producer} hangs up during XADD {value}"),
                );
                count(
                    &mut shared.lock().expect("shared").faults,
                    "client disconnect",
                );
                continue 'connection;
            }
            match request(&mut client, &shared, &["XADD", "s", "*", "v", &value]).await {
                Some(Value::Bulk(Some(id))) => {
                    let id = parse_id(&String::from_utf8_lossy(&id)).expect("an entry ID");
                    shared
                        .lock()
                        .expect("shared")
                        .history
                        .acknowledged
                        .push((producer, sequence, value, id));
                }
                Some(_) => {
                    // MISCONF after a failed sync, or LOADING: not acknowledged.
                    sleep(Duration::from_millis(50)).await;
                }
                None => {
                    shared.lock().expect("shared").history.interruptions += 1;
                    continue 'connection;
                }
            }
            sleep(Duration::from_millis(rng.random_range(1..30))).await;
        }
    }
}

/// A consumer of group `g`: reads new entries, claims entries left pending
/// by others (checking that a claim moves ownership and raises the delivery
/// count), and acknowledges what it processed.
pub(crate) async fn consume(consumer: u32, context: Context, mut rng: Xoshiro256PlusPlus) {
    let Context {
        shared,
        started,
        disconnect,
    } = context;
    let address = server_address();
    let name = format!("c{consumer}");
    let mut session = 0u64;
    'connection: loop {
        if shared.lock().expect("shared").stop_all {
            return;
        }
        let Some(mut client) = connect(address).await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        session += 1;
        // The group: created once; BUSYGROUP afterwards.
        match request(
            &mut client,
            &shared,
            &["XGROUP", "CREATE", "s", "g", "0", "MKSTREAM"],
        )
        .await
        {
            Some(_) => {}
            None => continue 'connection,
        }
        loop {
            if shared.lock().expect("shared").stop_all {
                return;
            }
            let healed = shared.lock().expect("shared").stop_producers;
            if rng.random_bool(disconnect) && !healed {
                let _ = timeout(
                    Duration::from_millis(1),
                    client.call(&[
                        "XREADGROUP",
                        "GROUP",
                        "g",
                        &name,
                        "COUNT",
                        "5",
                        "STREAMS",
                        "s",
                        ">",
                    ]),
                )
                .await;
                note(
                    &shared,
                    started,
                    format!("consumer {name} hangs up during XREADGROUP"),
                );
                count(
                    &mut shared.lock().expect("shared").faults,
                    "client disconnect",
                );
                continue 'connection;
            }
            let reply = request(
                &mut client,
                &shared,
                &[
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    &name,
                    "COUNT",
                    "5",
                    "BLOCK",
                    "200",
                    "STREAMS",
                    "s",
                    ">",
                ],
            )
            .await;
            let Some(reply) = reply else {
                shared.lock().expect("shared").history.interruptions += 1;
                continue 'connection;
            };
            let mut to_ack = Vec::new();
            for (id, value) in reply
                .items()
                .iter()
                .flat_map(|stream| read_entries(stream.items().get(1)))
            {
                let mut shared = shared.lock().expect("shared");
                *shared.history.observed_deliveries.entry(id).or_default() += 1;
                shared
                    .history
                    .delivered
                    .push((name.clone(), session, id, value));
                to_ack.push(id);
            }
            // Entries left pending by a crash or a lost XACK: claim them.
            let min_idle = if healed { "0" } else { "1000" };
            match request(
                &mut client,
                &shared,
                &["XAUTOCLAIM", "s", "g", &name, min_idle, "0", "COUNT", "10"],
            )
            .await
            {
                Some(Value::Array(Some(items))) => {
                    // Without JUSTID: the claimed entries, each delivered
                    // again (its delivery count goes up).
                    let claimed: Vec<Id> = items
                        .get(1)
                        .map_or(&[][..], Value::items)
                        .iter()
                        .filter_map(|entry| parse_id(&entry.items().first()?.text()))
                        .collect();
                    {
                        let mut shared = shared.lock().expect("shared");
                        for id in &claimed {
                            *shared.history.observed_deliveries.entry(*id).or_default() += 1;
                        }
                    }
                    // A claim moves ownership and raises the delivery
                    // count: ask the PEL right away (before healing, the
                    // 1 s minimum idle keeps other consumers off it).
                    if let (Some(first), false) = (claimed.first(), healed) {
                        let shown = check::show(*first);
                        // The deliveries seen before the question is sent: a
                        // later claim's reply may arrive before this reply
                        // while the server ran it after this XPENDING.
                        let observed = shared
                            .lock()
                            .expect("shared")
                            .history
                            .observed_deliveries
                            .get(first)
                            .copied()
                            .unwrap_or(0);
                        match request(
                            &mut client,
                            &shared,
                            &["XPENDING", "s", "g", &shown, &shown, "1"],
                        )
                        .await
                        {
                            Some(Value::Array(Some(rows))) => {
                                let row = rows.first().map(Value::items).unwrap_or_default();
                                let owner = row.get(1).map(Value::text).unwrap_or_default();
                                let count = match row.get(3) {
                                    Some(Value::Int(count)) => *count as u64,
                                    _ => 0,
                                };
                                let mut shared = shared.lock().expect("shared");
                                shared.history.claim_checks.push((
                                    *first,
                                    name.clone(),
                                    owner,
                                    count,
                                    observed,
                                ));
                            }
                            Some(_) => {}
                            None => {
                                shared.lock().expect("shared").history.interruptions += 1;
                                continue 'connection;
                            }
                        }
                    }
                    if !claimed.is_empty() {
                        count(
                            &mut shared.lock().expect("shared").coverage,
                            "claim of a stuck entry",
                        );
                        to_ack.extend(&claimed);
                        shared
                            .lock()
                            .expect("shared")
                            .history
                            .claimed
                            .push((name.clone(), claimed));
                    }
                }
                Some(_) => {}
                None => {
                    let mut shared = shared.lock().expect("shared");
                    shared.history.interruptions += 1;
                    shared.history.lost_claims.insert(name.clone());
                    drop(shared);
                    continue 'connection;
                }
            }
            for id in to_ack {
                let shown = check::show(id);
                match request(&mut client, &shared, &["XACK", "s", "g", &shown]).await {
                    Some(Value::Int(acked)) => {
                        shared
                            .lock()
                            .expect("shared")
                            .history
                            .acked
                            .push((id, acked));
                    }
                    Some(_) => {}
                    None => {
                        shared.lock().expect("shared").history.interruptions += 1;
                        continue 'connection;
                    }
                }
            }
        }
    }
}

/// A reader blocked in `XREAD BLOCK ... STREAMS s <last seen>`: every entry
/// it wakes up with was written (with `appendfsync always`, synced) before
/// the reply left, so it must be in the final stream.
pub(crate) async fn watch(context: Context) {
    let Context { shared, .. } = context;
    let mut last = "$".to_string();
    loop {
        if shared.lock().expect("shared").stop_all {
            return;
        }
        let Some(mut client) = connect(server_address()).await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            if shared.lock().expect("shared").stop_all {
                return;
            }
            let read = [
                "XREAD", "COUNT", "20", "BLOCK", "500", "STREAMS", "s", &last,
            ];
            let Some(reply) = request(&mut client, &shared, &read).await else {
                break;
            };
            let woke: Vec<(Id, String)> = reply
                .items()
                .iter()
                .flat_map(|stream| read_entries(stream.items().get(1)))
                .collect();
            if let Some((id, _)) = woke.last() {
                last = check::show(*id);
            }
            if !woke.is_empty() {
                let mut shared = shared.lock().expect("shared");
                count(&mut shared.coverage, "blocked reader woken by an XADD");
                shared.history.watched.extend(woke);
            }
        }
    }
}

/// The entries of a reply's entry list (`[[id, [field, value]], ...]`) as
/// (ID, value of the first field); entries without a parsable ID are
/// skipped.
pub(crate) fn read_entries(list: Option<&Value>) -> Vec<(Id, String)> {
    list.map_or(&[][..], Value::items)
        .iter()
        .filter_map(|entry| {
            let id = parse_id(&entry.items().first()?.text())?;
            let value = entry
                .items()
                .get(1)
                .and_then(|fields| fields.items().get(1))
                .map(Value::text)
                .unwrap_or_default();
            Some((id, value))
        })
        .collect()
}
