//! The model of what each acknowledged reply proves, for the keys the churn
//! workload drives.
//!
//! One churn client owns each such key and sends it every state-changing
//! stream command (XADD with `=`/`~` MAXLEN and MINID trims, XDEL, XTRIM,
//! XSETID, XGROUP CREATE/SETID/DESTROY/CREATECONSUMER/DELCONSUMER,
//! XREADGROUP, XACK, XCLAIM, XAUTOCLAIM), in pipelined batches and in
//! MULTI/EXEC transactions, with explicit IDs and zero idle times so that
//! nothing depends on the server's clock. The client runs the same
//! commands, in the same order, on its own copy of the stream engine: the
//! model. Every reply must be the model's reply, and the key's state read
//! back from the server (entries, stream counters, groups, PELs with
//! delivery counts, consumers) must be the model's state.
//!
//! A batch whose replies did not all come back (a crash, a timeout, a hang
//! up) may have run in part: the commands whose replies came back ran, the
//! others may or may not have. After fencing the old connection off, the
//! client reads the key's state and finds which prefix of the batch
//! explains it (all or none of a transaction); no prefix explaining it
//! means an acknowledged effect was lost, or something was applied that
//! was never sent. With `appendfsync always`, a restart (power loss
//! included) must bring back exactly such a state: that is the check that
//! the propagated log replays to the state the node served.

use std::sync::Arc;

use weir_io::ManualClock;
use weir_stream::{Config, Context, Engine, Outcome};

use crate::client::{parse, Value};

/// The time of the model's clock: only times the comparison ignores depend
/// on it.
const MODEL_CLOCK_MS: u64 = 1_700_000_000_000;

/// A command as sent: its arguments.
pub type Command = Vec<String>;

/// One key's model.
pub struct KeyModel {
    key: String,
    /// Every command known to have run, in order.
    history: Vec<Command>,
    engine: Engine,
}

impl std::fmt::Debug for KeyModel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KeyModel")
            .field("key", &self.key)
            .field("commands", &self.history.len())
            .finish()
    }
}

fn new_engine() -> Engine {
    Engine::new(Config::default(), Arc::new(ManualClock::new(MODEL_CLOCK_MS)))
}

fn execute(engine: &mut Engine, command: &[String]) -> Value {
    let args: Vec<&[u8]> = command.iter().map(|arg| arg.as_bytes()).collect();
    match engine.execute(&Context::default(), &args) {
        Outcome::Reply(reply) => {
            let bytes = reply.to_resp2();
            parse(&bytes)
                .ok()
                .flatten()
                .map_or_else(|| Value::Error("unparsable model reply".into()), |(value, _)| value)
        }
        Outcome::Blocked => Value::Error("the model blocked".into()),
    }
}

/// The replies of a transaction, as EXEC returns them.
fn exec_reply(engine: &mut Engine, commands: &[Command]) -> Value {
    Value::Array(Some(commands.iter().map(|command| execute(engine, command)).collect()))
}

/// A batch the client sends: commands on their own, or one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Batch {
    /// Pipelined commands, each replied to on its own.
    Pipeline(Vec<Command>),
    /// MULTI, the commands, EXEC: all run, or none.
    Transaction(Vec<Command>),
}

impl Batch {
    /// The requests on the wire.
    pub fn requests(&self) -> Vec<Command> {
        match self {
            Batch::Pipeline(commands) => commands.clone(),
            Batch::Transaction(commands) => {
                let mut requests = vec![vec!["MULTI".to_string()]];
                requests.extend(commands.iter().cloned());
                requests.push(vec!["EXEC".to_string()]);
                requests
            }
        }
    }

    /// The commands (without MULTI and EXEC).
    pub fn commands(&self) -> &[Command] {
        match self {
            Batch::Pipeline(commands) | Batch::Transaction(commands) => commands,
        }
    }

    /// How many units may have run: each command of a pipeline, the
    /// transaction as one.
    fn units(&self) -> usize {
        match self {
            Batch::Pipeline(commands) => commands.len(),
            Batch::Transaction(_) => 1,
        }
    }

    /// The units that ran for sure, given `replies` replies received (one
    /// per request, in order).
    fn units_replied(&self, replies: usize) -> usize {
        match self {
            Batch::Pipeline(_) => replies,
            Batch::Transaction(commands) => usize::from(replies == commands.len() + 2),
        }
    }
}

impl KeyModel {
    /// A model of `key`, which does not exist yet.
    pub fn new(key: &str) -> Self {
        Self {
            key: key.to_string(),
            history: Vec::new(),
            engine: new_engine(),
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Commands known to have run.
    pub fn commands(&self) -> usize {
        self.history.len()
    }

    /// Runs `batch` on the model and returns the replies the server must
    /// give, one per request. If the server's replies do not all come
    /// back, [`KeyModel::reconcile`] takes the batch back and finds what
    /// of it ran.
    pub fn run(&mut self, batch: &Batch) -> Vec<Value> {
        match batch {
            Batch::Pipeline(commands) => commands
                .iter()
                .map(|command| {
                    self.history.push(command.clone());
                    execute(&mut self.engine, command)
                })
                .collect(),
            Batch::Transaction(commands) => {
                let mut replies = vec![Value::Simple("OK".into())];
                replies.extend(commands.iter().map(|_| Value::Simple("QUEUED".into())));
                replies.push(exec_reply(&mut self.engine, commands));
                self.history.extend(commands.iter().cloned());
                replies
            }
        }
    }

    fn apply_units(&mut self, batch: &Batch, units: usize) {
        let commands: Vec<Command> = match batch {
            Batch::Pipeline(commands) => commands[..units].to_vec(),
            Batch::Transaction(commands) if units == 1 => commands.clone(),
            Batch::Transaction(_) => Vec::new(),
        };
        for command in commands {
            execute(&mut self.engine, &command);
            self.history.push(command);
        }
    }

    /// Rebuilds the engine from the first `commands` of the history.
    fn rewind(&mut self, commands: usize) {
        self.history.truncate(commands);
        let mut engine = new_engine();
        for command in &self.history {
            execute(&mut engine, command);
        }
        self.engine = engine;
    }

    /// The requests that read the key's state, given the groups the server
    /// (or the model) reports.
    pub fn dump_requests(&self, groups: &[String]) -> Vec<Command> {
        let key = self.key.clone();
        let mut requests = vec![
            vec!["XRANGE".into(), key.clone(), "-".into(), "+".into()],
            vec!["XINFO".into(), "STREAM".into(), key.clone()],
            vec!["XINFO".into(), "GROUPS".into(), key.clone()],
        ];
        for group in groups {
            requests.push(vec![
                "XPENDING".into(),
                key.clone(),
                group.clone(),
                "-".into(),
                "+".into(),
                "1000000".into(),
            ]);
            requests.push(vec!["XINFO".into(), "CONSUMERS".into(), key.clone(), group.clone()]);
        }
        requests
    }

    /// The model's state, as the dump requests read it (normalised).
    pub fn dump(&mut self) -> Vec<Value> {
        let groups_request = self.dump_requests(&[])[2].clone();
        let groups = group_names(&execute(&mut self.engine, &groups_request));
        let requests = self.dump_requests(&groups);
        requests
            .iter()
            .map(|request| normalise(request, execute(&mut self.engine, request)))
            .collect()
    }

    /// After `batch` (just given to [`KeyModel::run`]) failed with
    /// `replied` replies received: which prefix of it explains the
    /// server's state `server` (a dump, normalised)? Adopts that prefix and
    /// returns how many units of the batch ran (a transaction is one
    /// unit), or describes the mismatch.
    pub fn reconcile(&mut self, batch: &Batch, replied: usize, server: &[Value]) -> Result<usize, String> {
        let before = self.history.len() - batch.commands().len();
        let known = batch.units_replied(replied);
        for units in known..=batch.units() {
            self.rewind(before);
            self.apply_units(batch, units);
            if self.dump() == server {
                return Ok(units);
            }
        }
        self.rewind(before);
        Err(format!(
            "no prefix of the batch (from {known} of {} units) explains the key's state:\n  server {:?}\n  model before the batch {:?}",
            batch.units(),
            server,
            self.dump()
        ))
    }
}

/// The group names of an `XINFO GROUPS` reply.
pub fn group_names(reply: &Value) -> Vec<String> {
    reply
        .items()
        .iter()
        .filter_map(|group| {
            let fields = group.items();
            fields
                .chunks(2)
                .find(|pair| pair.first().is_some_and(|name| name.text() == "name"))
                .and_then(|pair| pair.get(1))
                .map(Value::text)
        })
        .collect()
}

/// Drops what depends on the server's clock from a dump reply: idle times
/// of pending entries, consumers' idle and inactive times.
pub fn normalise(request: &[String], reply: Value) -> Value {
    let kind = request.first().map(String::as_str);
    let sub = request.get(1).map(String::as_str);
    match (kind, sub) {
        (Some("XPENDING"), _) => Value::Array(Some(
            reply
                .items()
                .iter()
                .map(|row| {
                    let mut row = row.items().to_vec();
                    if row.len() > 2 {
                        row[2] = Value::Int(0);
                    }
                    Value::Array(Some(row))
                })
                .collect(),
        )),
        (Some("XINFO"), Some("CONSUMERS")) => Value::Array(Some(
            reply
                .items()
                .iter()
                .map(|consumer| {
                    let mut fields = consumer.items().to_vec();
                    for pair in fields.chunks_mut(2) {
                        if pair.len() == 2 && matches!(pair[0].text().as_str(), "idle" | "inactive") {
                            pair[1] = Value::Int(0);
                        }
                    }
                    Value::Array(Some(fields))
                })
                .collect(),
        )),
        _ => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(parts: &str) -> Command {
        parts.split(' ').map(str::to_string).collect()
    }

    fn server_dump(model: &mut KeyModel) -> Vec<Value> {
        model.dump()
    }

    #[test]
    fn replies_and_state_follow_the_commands() {
        let mut model = KeyModel::new("t");
        let batch = Batch::Pipeline(vec![
            command("XADD t 1-1 f a"),
            command("XGROUP CREATE t g 0"),
            command("XREADGROUP GROUP g c COUNT 1 STREAMS t >"),
        ]);
        let replies = model.run(&batch);
        assert_eq!(replies[0], Value::Bulk(Some(b"1-1".to_vec())));
        assert_eq!(replies[1], Value::Simple("OK".into()));
        assert_eq!(model.commands(), 3);
        let transaction = Batch::Transaction(vec![command("XACK t g 1-1"), command("XADD t 1-0 f b")]);
        let replies = model.run(&transaction);
        assert_eq!(replies.len(), 4);
        let Value::Array(Some(exec)) = &replies[3] else {
            panic!("EXEC replies with an array");
        };
        assert_eq!(exec[0], Value::Int(1));
        assert!(matches!(exec[1], Value::Error(_)), "an ID below the last one");
    }

    #[test]
    fn a_failed_batch_is_reconciled_to_the_prefix_that_explains_the_state() {
        let mut model = KeyModel::new("t");
        model.run(&Batch::Pipeline(vec![command("XADD t 1-1 f a")]));
        let batch = Batch::Pipeline(vec![
            command("XADD t 2-1 f b"),
            command("XADD t 3-1 f c"),
            command("XDEL t 1-1"),
        ]);
        model.run(&batch);
        // The server ran the first two.
        let mut server = KeyModel::new("t");
        server.run(&Batch::Pipeline(vec![command("XADD t 1-1 f a")]));
        server.run(&Batch::Pipeline(batch.requests()[..2].to_vec()));
        assert_eq!(model.reconcile(&batch, 1, &server_dump(&mut server)), Ok(2));
        assert_eq!(model.dump(), server.dump());
        // A state no prefix explains: an acknowledged effect lost.
        let mut other = KeyModel::new("t");
        other.run(&Batch::Pipeline(vec![command("XADD t 9-9 f z")]));
        let lost = Batch::Pipeline(vec![command("XADD t 4-1 f d")]);
        model.run(&lost);
        assert!(model.reconcile(&lost, 0, &other.dump()).is_err());
    }

    #[test]
    fn a_transaction_runs_whole_or_not_at_all() {
        let mut model = KeyModel::new("t");
        let transaction = Batch::Transaction(vec![command("XADD t 1-1 f a"), command("XADD t 2-1 f b")]);
        model.run(&transaction);
        let mut half = KeyModel::new("t");
        half.run(&Batch::Pipeline(vec![command("XADD t 1-1 f a")]));
        assert!(model.reconcile(&transaction, 0, &half.dump()).is_err(), "half a transaction");
        model.run(&transaction);
        let mut whole = KeyModel::new("t");
        whole.run(&transaction);
        assert_eq!(model.reconcile(&transaction, 0, &whole.dump()), Ok(1));
    }
}
