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
/// The most combinations of approximate-trim outcomes a reconciliation
/// tries.
const SEARCH_LIMIT: usize = 20_000;

/// A command as sent: its arguments.
pub type Command = Vec<String>;

/// One key's model.
pub struct KeyModel {
    key: String,
    config: Config,
    engine: Engine,
    /// The commands that rebuild the key as it was before the last batch.
    before: Vec<Vec<Vec<u8>>>,
    /// How each command of the last batch was resolved.
    resolved: Vec<Resolved>,
    /// Commands known to have run.
    commands: usize,
}

impl std::fmt::Debug for KeyModel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KeyModel")
            .field("key", &self.key)
            .field("commands", &self.commands)
            .finish()
    }
}

fn new_engine(config: &Config) -> Engine {
    Engine::new(*config, Arc::new(ManualClock::new(MODEL_CLOCK_MS)))
}

fn execute(engine: &mut Engine, command: &[String]) -> Value {
    let args: Vec<&[u8]> = command.iter().map(|arg| arg.as_bytes()).collect();
    to_value(engine.execute(&Context::default(), &args))
}

fn to_value(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Reply(reply) => {
            let bytes = reply.to_resp2();
            parse(&bytes).ok().flatten().map_or_else(
                || Value::Error("unparsable model reply".into()),
                |(value, _)| value,
            )
        }
        Outcome::Blocked => Value::Error("the model blocked".into()),
    }
}

/// An engine holding only the key rebuilt by `snapshot`.
fn rebuilt(config: &Config, snapshot: &[Vec<Vec<u8>>]) -> Engine {
    let mut engine = new_engine(config);
    let replaying = Context {
        replaying: true,
        ..Context::default()
    };
    for command in snapshot {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        engine.execute(&replaying, &args);
    }
    engine
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

    /// The commands that make up the first `units` units.
    fn commands_of(&self, units: usize) -> usize {
        match self {
            Batch::Pipeline(_) => units,
            Batch::Transaction(commands) => commands.len() * units,
        }
    }

    /// The node's reply to each command, where it came back.
    fn command_replies<'a>(&self, replies: &'a [Value]) -> Vec<Option<&'a Value>> {
        match self {
            Batch::Pipeline(commands) => (0..commands.len())
                .map(|index| replies.get(index))
                .collect(),
            Batch::Transaction(commands) => {
                let exec = replies
                    .get(commands.len() + 1)
                    .map(Value::items)
                    .unwrap_or_default();
                (0..commands.len()).map(|index| exec.get(index)).collect()
            }
        }
    }
}

/// A trim clause: `MAXLEN|MINID [=|~] threshold [LIMIT n]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Trim {
    kind: String,
    threshold: String,
    approximate: bool,
}

/// Splits an XADD or XTRIM into the command without its trim clause (for
/// XADD) and the clause.
fn split_trim(command: &[String]) -> Option<(Command, Trim)> {
    let name = command.first()?.to_ascii_uppercase();
    if name != "XADD" && name != "XTRIM" {
        return None;
    }
    let at = command
        .iter()
        .position(|arg| arg.eq_ignore_ascii_case("MAXLEN") || arg.eq_ignore_ascii_case("MINID"))?;
    let mut next = at + 1;
    let approximate = match command.get(next).map(String::as_str) {
        Some("~") => {
            next += 1;
            true
        }
        Some("=") => {
            next += 1;
            false
        }
        _ => false,
    };
    let threshold = command.get(next)?.clone();
    next += 1;
    if command
        .get(next)
        .is_some_and(|arg| arg.eq_ignore_ascii_case("LIMIT"))
    {
        next += 2;
    }
    let mut rest: Command = command[..at].to_vec();
    rest.extend_from_slice(&command[next.min(command.len())..]);
    let trim = Trim {
        kind: command[at].to_ascii_uppercase(),
        threshold,
        approximate,
    };
    Some((rest, trim))
}

/// How a command of a batch acts on the model.
#[derive(Clone, Debug)]
enum Resolved {
    /// These commands, exactly (an approximate trim resolved from the
    /// node's replies becomes an exact one).
    Exact(Vec<Command>),
    /// An approximate trim whose outcome the replies do not tell: the
    /// command without it (XADD), then the trim removes between none and
    /// what an exact one would.
    Open(Option<Command>, Trim),
}

impl KeyModel {
    /// A model of `key`, which does not exist yet, on an engine with the
    /// default settings.
    pub fn new(key: &str) -> Self {
        Self::with_config(key, Config::default())
    }

    /// A model of `key` on an engine with the server's settings.
    pub fn with_config(key: &str, config: Config) -> Self {
        Self {
            key: key.to_string(),
            engine: new_engine(&config),
            config,
            before: Vec::new(),
            resolved: Vec::new(),
            commands: 0,
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Commands known to have run.
    pub fn commands(&self) -> usize {
        self.commands
    }

    /// How many entries an exact version of `trim` would remove now.
    fn exact_count(&self, trim: &Trim) -> i64 {
        let mut scratch = rebuilt(&self.config, &self.engine.snapshot_key(self.key.as_bytes()));
        let exact = vec![
            "XTRIM".into(),
            self.key.clone(),
            trim.kind.clone(),
            "=".into(),
            trim.threshold.clone(),
        ];
        match execute(&mut scratch, &exact) {
            Value::Int(count) => count,
            _ => 0,
        }
    }

    fn length(&mut self) -> i64 {
        match execute(&mut self.engine, &["XLEN".to_string(), self.key.clone()]) {
            Value::Int(length) => length,
            _ => 0,
        }
    }

    /// Removes the `count` oldest entries, as the node's approximate trim
    /// did; the reply is `count`, or an error when an exact trim would not
    /// remove that many.
    fn trim_oldest(&mut self, trim: &Trim, count: i64) -> (Command, Value) {
        let most = self.exact_count(trim);
        let keep = (self.length() - count).max(0);
        let exact = vec![
            "XTRIM".into(),
            self.key.clone(),
            "MAXLEN".into(),
            "=".into(),
            keep.to_string(),
        ];
        if !(0..=most).contains(&count) {
            return (
                exact,
                Value::Error(format!(
                    "an approximate trim removed {count} entries; an exact one removes {most}"
                )),
            );
        }
        execute(&mut self.engine, &exact);
        (exact, Value::Int(count))
    }

    /// Runs `batch` on the model, given the node's `replies` (one per
    /// request, fewer if they did not all come back): resolves approximate
    /// trims from what the node says it removed, and returns the replies
    /// the node must give. If not all replies came back,
    /// [`KeyModel::reconcile`] finds what of the batch ran.
    pub fn run(&mut self, batch: &Batch, replies: &[Value]) -> Vec<Value> {
        self.before = self.engine.snapshot_key(self.key.as_bytes());
        self.resolved.clear();
        let node = batch.command_replies(replies);
        let commands = batch.commands();
        let mut expected = Vec::with_capacity(commands.len());
        for (index, command) in commands.iter().enumerate() {
            let (resolved, reply) =
                self.resolve(command, node[index], node.get(index + 1).copied().flatten());
            self.resolved.push(resolved);
            expected.push(reply);
        }
        self.commands += commands.len();
        match batch {
            Batch::Pipeline(_) => expected,
            Batch::Transaction(commands) => {
                let mut wrapped = vec![Value::Simple("OK".into())];
                wrapped.extend(commands.iter().map(|_| Value::Simple("QUEUED".into())));
                wrapped.push(Value::Array(Some(expected)));
                wrapped
            }
        }
    }

    /// Runs one command; an approximate trim takes the node's outcome: its
    /// reply (XTRIM's count), or the `XLEN` the client sends right after an
    /// XADD with one.
    fn resolve(
        &mut self,
        command: &Command,
        reply: Option<&Value>,
        next: Option<&Value>,
    ) -> (Resolved, Value) {
        let Some((rest, trim)) = split_trim(command).filter(|(_, trim)| trim.approximate) else {
            let reply = execute(&mut self.engine, command);
            return (Resolved::Exact(vec![command.clone()]), reply);
        };
        let is_xadd = command[0].eq_ignore_ascii_case("XADD");
        if is_xadd {
            let added = execute(&mut self.engine, &rest);
            if matches!(added, Value::Error(_) | Value::Bulk(None)) {
                return (Resolved::Exact(vec![rest]), added);
            }
            let Some(Value::Int(length)) = next else {
                return (Resolved::Open(Some(rest), trim), added);
            };
            let removed = self.length() - length;
            let (exact, _) = self.trim_oldest(&trim, removed);
            (Resolved::Exact(vec![rest, exact]), added)
        } else {
            let Some(Value::Int(removed)) = reply else {
                // An error (no such key) or no reply: as the model says.
                if let Some(Value::Error(_)) = reply {
                    let reply = execute(&mut self.engine, command);
                    return (Resolved::Exact(vec![command.clone()]), reply);
                }
                return (Resolved::Open(None, trim), Value::Error("no reply".into()));
            };
            let (exact, reply) = self.trim_oldest(&trim, *removed);
            (Resolved::Exact(vec![exact]), reply)
        }
    }

    /// The requests that read the key's state, given the groups the server
    /// (or the model) reports.
    pub fn dump_requests(&self, groups: &[String]) -> Vec<Command> {
        dump_requests(&self.key, groups)
    }

    /// The model's state, as the dump requests read it (normalised).
    pub fn dump(&mut self) -> Vec<Value> {
        dump_of(&mut self.engine, &self.key)
    }

    /// After the batch just given to [`KeyModel::run`] failed with
    /// `replied` replies received: which prefix of it (and which outcome
    /// of its unresolved approximate trims) explains the server's state
    /// `server` (a dump, normalised)? Adopts it and returns how many units
    /// of the batch ran (a transaction is one unit), or describes the
    /// mismatch.
    pub fn reconcile(
        &mut self,
        batch: &Batch,
        replied: usize,
        server: &[Value],
    ) -> Result<usize, String> {
        let known = batch.units_replied(replied);
        let stops: Vec<usize> = (known..=batch.units())
            .map(|units| batch.commands_of(units))
            .collect();
        let mut search = Search {
            model: self,
            server,
            stops: &stops,
            tried: 0,
        };
        let start = rebuilt(&search.model.config, &search.model.before);
        if let Some((engine, commands)) = search.explore(start, 0) {
            let units = stops
                .iter()
                .position(|stop| *stop == commands)
                .expect("a stop")
                + known;
            self.engine = engine;
            self.commands = self.commands - batch.commands().len() + commands;
            return Ok(units);
        }
        let tried = search.tried;
        self.engine = rebuilt(&self.config, &self.before);
        self.commands -= batch.commands().len();
        Err(format!(
            "no prefix of the batch (from {known} of {} units; {tried} trim outcomes tried) explains the key's state:\n  server {}\n  model before the batch {}",
            batch.units(),
            show_all(server),
            show_all(&self.dump())
        ))
    }
}

/// The requests that read `key`'s state, given its groups.
fn dump_requests(key: &str, groups: &[String]) -> Vec<Command> {
    let key = key.to_string();
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
        requests.push(vec![
            "XINFO".into(),
            "CONSUMERS".into(),
            key.clone(),
            group.clone(),
        ]);
    }
    requests
}

fn dump_of(engine: &mut Engine, key: &str) -> Vec<Value> {
    let groups_request = dump_requests(key, &[])[2].clone();
    let groups = group_names(&execute(engine, &groups_request));
    let requests = dump_requests(key, &groups);
    requests
        .iter()
        .map(|request| normalise(request, execute(engine, request)))
        .collect()
}

/// The depth-first search of [`KeyModel::reconcile`].
struct Search<'a> {
    model: &'a KeyModel,
    server: &'a [Value],
    /// After how many commands the batch may have stopped.
    stops: &'a [usize],
    tried: usize,
}

impl Search<'_> {
    /// From `engine` with `done` commands of the batch applied: a way on
    /// that explains the server's state (the engine and the commands
    /// applied).
    fn explore(&mut self, mut engine: Engine, done: usize) -> Option<(Engine, usize)> {
        self.tried += 1;
        if self.tried > SEARCH_LIMIT {
            return None;
        }
        if self.stops.contains(&done) && dump_of(&mut engine, &self.model.key) == self.server {
            return Some((engine, done));
        }
        let resolved = self.model.resolved.get(done)?;
        match resolved {
            Resolved::Exact(commands) => {
                for command in commands {
                    execute(&mut engine, command);
                }
                self.explore(engine, done + 1)
            }
            Resolved::Open(rest, trim) => {
                let key = self.model.key.as_bytes();
                if let Some(rest) = rest {
                    if matches!(
                        execute(&mut engine, rest),
                        Value::Error(_) | Value::Bulk(None)
                    ) {
                        return self.explore(engine, done + 1);
                    }
                }
                let snapshot = engine.snapshot_key(key);
                let exact = vec![
                    "XTRIM".into(),
                    self.model.key.clone(),
                    trim.kind.clone(),
                    "=".into(),
                    trim.threshold.clone(),
                ];
                let most = match execute(&mut rebuilt(&self.model.config, &snapshot), &exact) {
                    Value::Int(count) => count,
                    _ => 0,
                };
                let length = match execute(&mut engine, &["XLEN".into(), self.model.key.clone()]) {
                    Value::Int(length) => length,
                    _ => 0,
                };
                for removed in 0..=most {
                    let mut branch = rebuilt(&self.model.config, &snapshot);
                    let keep = (length - removed).to_string();
                    execute(
                        &mut branch,
                        &[
                            "XTRIM".into(),
                            self.model.key.clone(),
                            "MAXLEN".into(),
                            "=".into(),
                            keep,
                        ],
                    );
                    if let Some(found) = self.explore(branch, done + 1) {
                        return Some(found);
                    }
                }
                None
            }
        }
    }
}

/// Replies rendered for evidence.
pub fn show_all(replies: &[Value]) -> String {
    replies
        .iter()
        .map(Value::show)
        .collect::<Vec<_>>()
        .join(" ")
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

/// Drops what may differ between the node and the model without being
/// wrong: idle times of pending entries (extended `XPENDING`), consumers'
/// idle and inactive times (the clock), and a stream's radix-tree counts
/// (its node layout, which a rewrite or a recovery packs differently).
pub fn normalise(request: &[String], reply: Value) -> Value {
    let kind = request.first().map(|kind| kind.to_ascii_uppercase());
    let sub = request.get(1).map(|sub| sub.to_ascii_uppercase());
    match (kind.as_deref(), sub.as_deref()) {
        (Some("XPENDING"), _) if request.len() >= 6 => Value::Array(Some(
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
                .map(|consumer| zero_fields(consumer, &["idle", "inactive"]))
                .collect(),
        )),
        (Some("XINFO"), Some("STREAM")) if matches!(reply, Value::Array(Some(_))) => {
            zero_fields(&reply, &["radix-tree-keys", "radix-tree-nodes"])
        }
        _ => reply,
    }
}

/// [`normalise`] for each reply of a batch, a transaction's EXEC reply
/// item by item.
pub fn normalise_batch(batch: &Batch, replies: Vec<Value>) -> Vec<Value> {
    let requests = batch.requests();
    replies
        .into_iter()
        .zip(&requests)
        .map(|(reply, request)| match (batch, reply) {
            (Batch::Transaction(commands), Value::Array(Some(items))) if request[0] == "EXEC" => {
                Value::Array(Some(
                    items
                        .into_iter()
                        .zip(commands)
                        .map(|(item, command)| normalise(command, item))
                        .collect(),
                ))
            }
            (_, reply) => normalise(request, reply),
        })
        .collect()
}

/// A field/value array with the named fields' values set to 0.
fn zero_fields(reply: &Value, names: &[&str]) -> Value {
    let mut fields = reply.items().to_vec();
    for pair in fields.chunks_mut(2) {
        if pair.len() == 2 && names.contains(&pair[0].text().as_str()) {
            pair[1] = Value::Int(0);
        }
    }
    Value::Array(Some(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(parts: &str) -> Command {
        parts.split(' ').map(str::to_string).collect()
    }

    fn filled(entries: u64) -> KeyModel {
        let mut model = KeyModel::new("t");
        let adds = (1..=entries)
            .map(|ms| command(&format!("XADD t {ms}-1 f v")))
            .collect();
        model.run(&Batch::Pipeline(adds), &[]);
        model
    }

    #[test]
    fn replies_and_state_follow_the_commands() {
        let mut model = KeyModel::new("t");
        let batch = Batch::Pipeline(vec![
            command("XADD t 1-1 f a"),
            command("XGROUP CREATE t g 0"),
            command("XREADGROUP GROUP g c COUNT 1 STREAMS t >"),
        ]);
        let replies = model.run(&batch, &[]);
        assert_eq!(replies[0], Value::Bulk(Some(b"1-1".to_vec())));
        assert_eq!(replies[1], Value::Simple("OK".into()));
        assert_eq!(model.commands(), 3);
        let transaction =
            Batch::Transaction(vec![command("XACK t g 1-1"), command("XADD t 1-0 f b")]);
        let replies = model.run(&transaction, &[]);
        assert_eq!(replies.len(), 4);
        let Value::Array(Some(exec)) = &replies[3] else {
            panic!("EXEC replies with an array");
        };
        assert_eq!(exec[0], Value::Int(1));
        assert!(
            matches!(exec[1], Value::Error(_)),
            "an ID below the last one"
        );
    }

    #[test]
    fn a_failed_batch_is_reconciled_to_the_prefix_that_explains_the_state() {
        let mut model = filled(1);
        let batch = Batch::Pipeline(vec![
            command("XADD t 2-1 f b"),
            command("XADD t 3-1 f c"),
            command("XDEL t 1-1"),
        ]);
        model.run(&batch, &[]);
        // The server ran the first two.
        let mut server = filled(1);
        server.run(&Batch::Pipeline(batch.requests()[..2].to_vec()), &[]);
        assert_eq!(model.reconcile(&batch, 1, &server.dump()), Ok(2));
        assert_eq!(model.dump(), server.dump());
        // A state no prefix explains: an acknowledged effect lost.
        let mut other = KeyModel::new("t");
        other.run(&Batch::Pipeline(vec![command("XADD t 9-9 f z")]), &[]);
        let lost = Batch::Pipeline(vec![command("XADD t 4-1 f d")]);
        model.run(&lost, &[]);
        assert!(model.reconcile(&lost, 0, &other.dump()).is_err());
        assert_eq!(
            model.dump(),
            server.dump(),
            "the model is back where it was"
        );
    }

    #[test]
    fn a_transaction_runs_whole_or_not_at_all() {
        let mut model = KeyModel::new("t");
        let transaction =
            Batch::Transaction(vec![command("XADD t 1-1 f a"), command("XADD t 2-1 f b")]);
        model.run(&transaction, &[]);
        let mut half = filled(1);
        assert!(
            model.reconcile(&transaction, 0, &half.dump()).is_err(),
            "half a transaction"
        );
        model.run(&transaction, &[]);
        let mut whole = KeyModel::new("t");
        whole.run(&transaction, &[]);
        assert_eq!(model.reconcile(&transaction, 0, &whole.dump()), Ok(1));
    }

    #[test]
    fn approximate_trims_take_the_nodes_outcome_within_the_exact_one() {
        let mut model = filled(10);
        let trim = Batch::Pipeline(vec![command("XTRIM t MAXLEN ~ 5")]);
        assert_eq!(model.run(&trim, &[Value::Int(3)]), vec![Value::Int(3)]);
        assert_eq!(model.dump(), filled_from(4, 10).dump());
        // More than an exact trim removes: the expected reply says so.
        let replies = model.run(&trim, &[Value::Int(3)]);
        assert!(matches!(replies[0], Value::Error(_)), "{replies:?}");
        // An XADD's trim is told by the XLEN after it.
        let mut model = filled(10);
        let add = Batch::Pipeline(vec![
            command("XADD t MAXLEN ~ 4 11-1 f v"),
            command("XLEN t"),
        ]);
        let replies = model.run(&add, &[Value::Bulk(Some(b"11-1".to_vec())), Value::Int(8)]);
        assert_eq!(
            replies,
            vec![Value::Bulk(Some(b"11-1".to_vec())), Value::Int(8)]
        );
        assert_eq!(model.dump(), filled_from(4, 11).dump());
    }

    /// A model holding entries `from`-1 ..= `to`-1, with the counters of
    /// one that had entries from 1.
    fn filled_from(from: u64, to: u64) -> KeyModel {
        let mut model = filled(to);
        model.run(
            &Batch::Pipeline(vec![command(&format!("XTRIM t MINID = {from}-0"))]),
            &[],
        );
        model
    }

    #[test]
    fn an_unreplied_approximate_trim_is_searched() {
        let mut model = filled(10);
        let batch = Batch::Pipeline(vec![
            command("XADD t MAXLEN ~ 4 11-1 f v"),
            command("XLEN t"),
        ]);
        model.run(&batch, &[]);
        let mut server = filled_from(3, 11);
        assert_eq!(model.reconcile(&batch, 0, &server.dump()), Ok(1));
        assert_eq!(model.dump(), server.dump());
        // Trimmed more than MAXLEN allows: nothing explains it.
        let mut model = filled(10);
        model.run(&batch, &[]);
        let mut beyond = filled_from(9, 11);
        assert!(model.reconcile(&batch, 0, &beyond.dump()).is_err());
    }
}
