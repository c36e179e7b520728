//! Churn clients: each owns a few keys (`t<client>-<n>`) and sends them
//! every state-changing stream command, in pipelined batches and MULTI/EXEC
//! transactions, checking every reply against its model
//! ([`crate::model`]). A batch whose replies did not all come back is
//! settled before the next: the old connection is fenced off (`CLIENT KILL
//! ID ... ADDR ...` from a new one, so that none of its requests can still
//! run), the key's state is read, and the model adopts the prefix of the
//! batch that explains it. When the producers stop, the models are handed
//! to the final checks, which compare them with the server's state after
//! healing and again after one more power loss.

use std::time::Duration;

use madsim::time::sleep;
use rand::RngExt;
use rand_xoshiro::Xoshiro256PlusPlus;
use tokio::net::TcpStream;
use weir_stream::{Config, NodeLimits};

use super::super::nemesis::Features;
use super::super::network::{connect, pipeline, request, server_address};
use super::super::{check_stream_engine, count, note, SharedRef};
use super::Context;
use crate::check::Violation;
use crate::client::{Client, Value};
use crate::model::{group_names, normalise, normalise_batch, Batch, Command, KeyModel};

const GROUPS: [&str; 2] = ["ga", "gb"];
const CONSUMERS: [&str; 3] = ["ca", "cb", "cc"];

/// The engine settings of the stream node, which the models share.
pub(crate) fn engine_config(features: &Features) -> Config {
    let settings = weir_server::Settings::default();
    Config {
        node_limits: NodeLimits {
            max_entries: features.node_max_entries,
            max_bytes: settings.stream_node_max_bytes,
        },
        compatibility: settings.compatibility().expect("the default compatibility"),
    }
}

/// What the client remembers of a key to make up commands that mostly
/// make sense (the model decides what they do).
struct KeyState {
    model: KeyModel,
    next_ms: u64,
    ids: Vec<String>,
}

/// A connection with what fencing it off needs.
struct Connection {
    client: Client<TcpStream>,
    fence: Fence,
}

/// What names a connection for `CLIENT KILL`: its ID and its address (IDs
/// start again at 1 when the node restarts; the address does not repeat).
#[derive(Clone, Debug)]
struct Fence {
    id: String,
    addr: String,
}

/// A churn client: runs until the producers stop and its keys are settled,
/// then hands its models back.
pub(crate) async fn churn(
    index: u32,
    context: Context,
    features: Features,
    mut rng: Xoshiro256PlusPlus,
) {
    let config = engine_config(&features);
    let mut keys: Vec<KeyState> = (0..features.keys_per_client)
        .map(|n| KeyState {
            model: KeyModel::with_config(&format!("t{index}-{n}"), config),
            next_ms: 1,
            ids: Vec::new(),
        })
        .collect();
    let mut connection: Option<Connection> = None;
    let mut unsettled: Option<(usize, Batch, usize, Option<Fence>)> = None;
    loop {
        sleep(Duration::from_millis(rng.random_range(1..40))).await;
        if let Some((key, batch, replied, old)) = unsettled.take() {
            match settle(&context, &mut keys[key].model, &batch, replied, old).await {
                Settled::Yes => {}
                Settled::NotYet(old) => unsettled = Some((key, batch, replied, old)),
                Settled::Broken(violation) => return give_up(&context, violation),
            }
            continue;
        }
        if context.shared.lock().expect("shared").stop_producers {
            break;
        }
        if connection.is_none() {
            connection = open(&context.shared).await;
            continue;
        }
        let key = rng.random_range(0..keys.len());
        let batch = make_batch(&mut rng, &mut keys[key], &features);
        let mut current = connection.take().expect("a connection");
        match run_batch(
            &context,
            &mut rng,
            &mut current,
            &mut keys[key].model,
            &batch,
            &features,
        )
        .await
        {
            Ran::Checked => connection = Some(current),
            Ran::Failed(replied) => unsettled = Some((key, batch, replied, Some(current.fence))),
            Ran::Wrong(violation) => return give_up(&context, violation),
        }
        check_stream_engine(&context.shared);
    }
    let mut shared = context.shared.lock().expect("shared");
    shared
        .churn_models
        .extend(keys.into_iter().map(|key| key.model));
    shared.churn_done += 1;
}

fn give_up(context: &Context, violation: Violation) {
    note(
        &context.shared,
        context.started,
        format!("churn: {violation}"),
    );
    let mut shared = context.shared.lock().expect("shared");
    shared.churn_violations.push(violation);
    shared.churn_done += 1;
}

/// Connects and learns the connection's ID and address.
async fn open(shared: &SharedRef) -> Option<Connection> {
    let mut client = connect(server_address()).await?;
    let info = request(&mut client, shared, &["CLIENT", "INFO"])
        .await?
        .text();
    let field = |name: &str| {
        info.split_whitespace()
            .find_map(|pair| {
                pair.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('='))
            })
            .map(str::to_string)
    };
    let fence = Fence {
        id: field("id")?,
        addr: field("addr")?,
    };
    Some(Connection { client, fence })
}

enum Ran {
    /// Every reply came back and was the model's.
    Checked,
    /// Not every reply came back (or the node refused the batch): the
    /// batch may have run in part; so many replies came back first.
    Failed(usize),
    /// A reply that was not the model's.
    Wrong(Violation),
}

/// Errors that say the node did not run the command (its state, not the
/// command): the batch is settled like one whose replies were lost. (Not
/// EXECABORT: weir aborts a transaction only for a queueing error, which
/// the churn commands never have, so an EXECABORT is a wrong reply.)
fn refused(reply: &Value) -> bool {
    match reply {
        Value::Error(text) => ["MISCONF", "LOADING"]
            .iter()
            .any(|prefix| text.starts_with(prefix)),
        Value::Array(Some(items)) => items.iter().any(refused),
        _ => false,
    }
}

async fn run_batch(
    context: &Context,
    rng: &mut Xoshiro256PlusPlus,
    connection: &mut Connection,
    model: &mut KeyModel,
    batch: &Batch,
    features: &Features,
) -> Ran {
    let requests = batch.requests();
    let split = requests.len() > 1 && rng.random_bool(features.split_pipelines);
    if rng.random_bool(context.disconnect) {
        // Send, then hang up before the replies.
        let _ = madsim::time::timeout(Duration::from_millis(1), connection.client.send(&requests))
            .await;
        note(
            &context.shared,
            context.started,
            format!("churn hangs up during a batch on {}", model.key()),
        );
        count(
            &mut context.shared.lock().expect("shared").faults,
            "client disconnect",
        );
        model.run(batch, &[]);
        return Ran::Failed(0);
    }
    let replies = pipeline(&mut connection.client, &context.shared, &requests, split).await;
    cover(&context.shared, batch, split, &replies);
    let expected = model.run(batch, &replies);
    if let Some(first) = replies.iter().position(refused) {
        return Ran::Failed(first);
    }
    if replies.len() < requests.len() {
        return Ran::Failed(replies.len());
    }
    let got = normalise_batch(batch, replies);
    let want = normalise_batch(batch, expected);
    for ((request, got), want) in requests.iter().zip(got).zip(want) {
        if got != want {
            return Ran::Wrong(Violation {
                invariant: "churn-replies",
                evidence: format!(
                    "{} on {}, in {batch:?}: the node replied {}, the model {}",
                    request.join(" "),
                    model.key(),
                    got.show(),
                    want.show()
                ),
            });
        }
    }
    Ran::Checked
}

/// Counts the paths a batch took.
fn cover(shared: &SharedRef, batch: &Batch, split: bool, replies: &[Value]) {
    let mut shared = shared.lock().expect("shared");
    let coverage = &mut shared.coverage;
    if split {
        count(coverage, "pipelined batch split in two writes");
    }
    match batch {
        Batch::Transaction(_) => count(coverage, "MULTI/EXEC transaction"),
        Batch::Pipeline(commands) if commands.len() > 1 => count(coverage, "pipelined batch"),
        Batch::Pipeline(_) => {}
    }
    for (command, reply) in batch.commands().iter().zip(replies) {
        if !matches!(reply, Value::Error(_)) {
            count(coverage, command_path(command));
        }
    }
    if shared.rewrite_running {
        count(&mut shared.coverage, "churn write during a rewrite");
    }
}

/// The coverage name of a command (with its trim flavour for XADD and
/// XTRIM).
fn command_path(command: &Command) -> &'static str {
    let has = |word: &str| command.iter().any(|arg| arg == word);
    match (command[0].as_str(), command.get(1).map(String::as_str)) {
        ("XADD", _) if has("MAXLEN") && has("=") => "XADD MAXLEN =",
        ("XADD", _) if has("MAXLEN") => "XADD MAXLEN ~",
        ("XADD", _) if has("MINID") => "XADD MINID",
        ("XADD", _) => "XADD",
        ("XTRIM", _) if has("~") => "XTRIM ~",
        ("XTRIM", _) => "XTRIM =",
        ("XDEL", _) => "XDEL",
        ("XSETID", _) => "XSETID",
        ("XGROUP", Some("CREATE")) => "XGROUP CREATE",
        ("XGROUP", Some("SETID")) => "XGROUP SETID",
        ("XGROUP", Some("DESTROY")) => "XGROUP DESTROY",
        ("XGROUP", Some("CREATECONSUMER")) => "XGROUP CREATECONSUMER",
        ("XGROUP", Some("DELCONSUMER")) => "XGROUP DELCONSUMER",
        ("XREADGROUP", _) => "XREADGROUP",
        ("XACK", _) => "XACK",
        ("XCLAIM", _) => "XCLAIM",
        ("XAUTOCLAIM", _) => "XAUTOCLAIM",
        ("DEL", _) => "DEL",
        _ => "churn read",
    }
}

enum Settled {
    Yes,
    /// Not yet (the node cannot be reached); the old connection is still
    /// to be fenced off.
    NotYet(Option<Fence>),
    /// No prefix of the batch explains the key's state.
    Broken(Violation),
}

/// Fences the old connection off, reads the key's state and has the model
/// adopt the prefix of the batch that explains it.
async fn settle(
    context: &Context,
    model: &mut KeyModel,
    batch: &Batch,
    replied: usize,
    old: Option<Fence>,
) -> Settled {
    let shared = &context.shared;
    let Some(mut fresh) = open(shared).await else {
        return Settled::NotYet(old);
    };
    if let Some(fence) = &old {
        // Killed, or already gone ("No such client"): either way none of
        // its requests runs from now on.
        let kill = ["CLIENT", "KILL", "ID", &fence.id, "ADDR", &fence.addr];
        if request(&mut fresh.client, shared, &kill).await.is_none() {
            return Settled::NotYet(old);
        }
    }
    let Some(server) = read_dump(&mut fresh.client, shared, model).await else {
        return Settled::NotYet(None);
    };
    match model.reconcile(batch, replied, &server) {
        Ok(units) => {
            let mut shared = shared.lock().expect("shared");
            count(&mut shared.coverage, "churn batch settled after a failure");
            if matches!(batch, Batch::Transaction(_)) {
                count(&mut shared.coverage, "transaction whose reply was lost");
            }
            if units > 0 && units < batch.commands().len() && matches!(batch, Batch::Pipeline(_)) {
                count(&mut shared.coverage, "pipelined batch ran in part");
            }
            Settled::Yes
        }
        Err(evidence) => Settled::Broken(Violation {
            invariant: "churn-acknowledged-effects",
            evidence: format!(
                "{} after a failed batch {batch:?} ({replied} replies): {evidence}",
                model.key()
            ),
        }),
    }
}

/// Reads a key's state as [`KeyModel::dump_requests`] says, normalised;
/// `None` when a reply did not come back or the node refused.
///
/// A state read after a failed sync is not read at all: under `appendfsync
/// always` the node then serves what it could not make durable (the
/// commands whose replies it withheld), which a restart may take back; the
/// client waits for the restart.
pub(crate) async fn read_dump(
    client: &mut Client<TcpStream>,
    shared: &SharedRef,
    model: &KeyModel,
) -> Option<Vec<Value>> {
    let groups_request = model.dump_requests(&[])[2].clone();
    let first = [
        vec!["INFO".to_string(), "persistence".to_string()],
        groups_request,
    ];
    let replies = pipeline(client, shared, &first, false).await;
    if !replies.first()?.text().contains("aof_last_write_status:ok") {
        return None;
    }
    let groups = group_names(replies.get(1).filter(|reply| !refused(reply))?);
    let requests = model.dump_requests(&groups);
    let replies = pipeline(client, shared, &requests, false).await;
    if replies.len() < requests.len() || replies.iter().any(refused) {
        return None;
    }
    Some(
        requests
            .iter()
            .zip(replies)
            .map(|(request, reply)| normalise(request, reply))
            .collect(),
    )
}

fn make_batch(rng: &mut Xoshiro256PlusPlus, key: &mut KeyState, features: &Features) -> Batch {
    let length = rng.random_range(1..=8);
    let mut commands = Vec::new();
    for _ in 0..length {
        let command = make_command(rng, key);
        // What an XADD's approximate trim removed is told by the length.
        let approximate_add = command[0] == "XADD" && command.iter().any(|arg| arg == "~");
        commands.push(command);
        if approximate_add {
            commands.push(vec!["XLEN".to_string(), key.model.key().to_string()]);
        }
    }
    if rng.random_bool(features.churn_transactions) {
        Batch::Transaction(commands)
    } else {
        Batch::Pipeline(commands)
    }
}

fn pick<'a>(rng: &mut Xoshiro256PlusPlus, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// An ID the key has seen, or a made-up one near them.
fn some_id(rng: &mut Xoshiro256PlusPlus, key: &KeyState) -> String {
    if key.ids.is_empty() || rng.random_bool(0.1) {
        format!(
            "{}-{}",
            rng.random_range(0..key.next_ms + 2),
            rng.random_range(0..3)
        )
    } else {
        key.ids[rng.random_range(0..key.ids.len())].clone()
    }
}

fn make_command(rng: &mut Xoshiro256PlusPlus, key: &mut KeyState) -> Command {
    let name = key.model.key().to_string();
    let mut command: Vec<String> = Vec::new();
    let mut push = |parts: &[&str]| command.extend(parts.iter().map(|part| part.to_string()));
    let roll = rng.random_range(0..100);
    match roll {
        0..30 => {
            push(&["XADD", &name]);
            if rng.random_bool(0.05) {
                push(&["NOMKSTREAM"]);
            }
            if rng.random_bool(0.4) {
                let trim = trim_arguments(rng, key);
                push(&trim.iter().map(String::as_str).collect::<Vec<_>>());
            }
            let id = new_id(rng, key);
            let value = format!("v{}", rng.random_range(0..1000));
            push(&[&id, "f", &value]);
        }
        30..37 => {
            push(&["XDEL", &name]);
            for _ in 0..rng.random_range(1..=3) {
                push(&[&some_id(rng, key)]);
            }
        }
        37..43 => {
            push(&["XTRIM", &name]);
            let trim = trim_arguments(rng, key);
            push(&trim.iter().map(String::as_str).collect::<Vec<_>>());
        }
        43..46 => {
            let ms = key.next_ms + rng.random_range(0..3);
            push(&["XSETID", &name, &format!("{ms}-0")]);
            if rng.random_bool(0.3) {
                let added = rng.random_range(0..200).to_string();
                let deleted = some_id(rng, key);
                push(&["ENTRIESADDED", &added, "MAXDELETEDID", &deleted]);
            }
            key.next_ms = key.next_ms.max(ms + 1);
        }
        46..52 => {
            let group = pick(rng, &GROUPS);
            let start = match rng.random_range(0..3) {
                0 => "$".to_string(),
                1 => "0".to_string(),
                _ => some_id(rng, key),
            };
            push(&["XGROUP", "CREATE", &name, group, &start]);
            if rng.random_bool(0.5) {
                push(&["MKSTREAM"]);
            }
            if rng.random_bool(0.2) {
                push(&["ENTRIESREAD", &rng.random_range(0..50).to_string()]);
            }
        }
        52..55 => {
            let (group, id) = (pick(rng, &GROUPS), some_id(rng, key));
            let id = if rng.random_bool(0.3) {
                "$".to_string()
            } else {
                id
            };
            push(&["XGROUP", "SETID", &name, group, &id]);
            if rng.random_bool(0.2) {
                push(&["ENTRIESREAD", &rng.random_range(0..50).to_string()]);
            }
        }
        55..57 => push(&["XGROUP", "DESTROY", &name, pick(rng, &GROUPS)]),
        57..60 => push(&[
            "XGROUP",
            "CREATECONSUMER",
            &name,
            pick(rng, &GROUPS),
            pick(rng, &CONSUMERS),
        ]),
        60..63 => push(&[
            "XGROUP",
            "DELCONSUMER",
            &name,
            pick(rng, &GROUPS),
            pick(rng, &CONSUMERS),
        ]),
        63..78 => {
            let (group, consumer) = (pick(rng, &GROUPS), pick(rng, &CONSUMERS));
            push(&[
                "XREADGROUP",
                "GROUP",
                group,
                consumer,
                "COUNT",
                &rng.random_range(1..6).to_string(),
            ]);
            if rng.random_bool(0.1) {
                push(&["NOACK"]);
            }
            let from = if rng.random_bool(0.8) {
                ">".to_string()
            } else {
                some_id(rng, key)
            };
            push(&["STREAMS", &name, &from]);
        }
        78..86 => {
            push(&["XACK", &name, pick(rng, &GROUPS)]);
            for _ in 0..rng.random_range(1..=3) {
                push(&[&some_id(rng, key)]);
            }
        }
        86..91 => {
            push(&[
                "XCLAIM",
                &name,
                pick(rng, &GROUPS),
                pick(rng, &CONSUMERS),
                "0",
            ]);
            for _ in 0..rng.random_range(1..=3) {
                push(&[&some_id(rng, key)]);
            }
            if rng.random_bool(0.3) {
                push(&["RETRYCOUNT", &rng.random_range(0..10).to_string()]);
            }
            for flag in ["FORCE", "JUSTID"] {
                if rng.random_bool(0.25) {
                    push(&[flag]);
                }
            }
        }
        91..95 => {
            let (group, consumer, start) =
                (pick(rng, &GROUPS), pick(rng, &CONSUMERS), some_id(rng, key));
            push(&[
                "XAUTOCLAIM",
                &name,
                group,
                consumer,
                "0",
                &start,
                "COUNT",
                &rng.random_range(1..6).to_string(),
            ]);
            if rng.random_bool(0.25) {
                push(&["JUSTID"]);
            }
        }
        95 => push(&["DEL", &name]),
        _ => match rng.random_range(0..4) {
            0 => push(&["XLEN", &name]),
            1 => push(&[
                "XRANGE",
                &name,
                "-",
                "+",
                "COUNT",
                &rng.random_range(1..10).to_string(),
            ]),
            2 => push(&["XPENDING", &name, pick(rng, &GROUPS)]),
            _ => push(&["XINFO", "STREAM", &name]),
        },
    }
    command
}

/// A new entry ID: mostly past the last one (explicit sequence or `ms-*`),
/// sometimes one that may be too small (the error is part of the test).
fn new_id(rng: &mut Xoshiro256PlusPlus, key: &mut KeyState) -> String {
    let id = match rng.random_range(0..20) {
        0 => format!(
            "{}-{}",
            rng.random_range(0..key.next_ms + 1),
            rng.random_range(0..3)
        ),
        1 | 2 => format!("{}-*", key.next_ms),
        _ => format!("{}-{}", key.next_ms, rng.random_range(0..3)),
    };
    key.next_ms += rng.random_range(0..3);
    if !id.ends_with('*') {
        key.ids.push(id.clone());
        if key.ids.len() > 64 {
            key.ids.remove(0);
        }
    }
    id
}

/// `MAXLEN|MINID [=|~] threshold [LIMIT n]`.
fn trim_arguments(rng: &mut Xoshiro256PlusPlus, key: &KeyState) -> Vec<String> {
    let mut arguments = Vec::new();
    let threshold = if rng.random_bool(0.5) {
        arguments.push("MAXLEN".to_string());
        rng.random_range(0..20).to_string()
    } else {
        arguments.push("MINID".to_string());
        format!(
            "{}-0",
            rng.random_range(key.next_ms.saturating_sub(20)..key.next_ms + 1)
        )
    };
    let approximate = match rng.random_range(0..3) {
        0 => None,
        1 => Some("="),
        _ => Some("~"),
    };
    arguments.extend(approximate.map(str::to_string));
    arguments.push(threshold);
    if approximate == Some("~") && rng.random_bool(0.3) {
        arguments.extend(["LIMIT".to_string(), rng.random_range(0..10).to_string()]);
    }
    arguments
}
