//! The nodes' own log events, counted per seed: which of weir's logged
//! branches (recoveries, repairs, refusals, retries) a seed's nodes took.
//! The coverage paths are what the simulator's clients and nemesis saw;
//! these are what the nodes did, so a run shows which recovery paths no
//! seed reaches, where a bug would go unseen by every check.
//!
//! An event is named by its crate and its message
//! (`weir_replication: raft log: repaired`); events at TRACE and those of
//! other crates are not counted. madsim runs a seed on one thread, and
//! the runner takes the counts between seeds ([`take`]).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::{filter_fn, Filtered};
use tracing_subscriber::layer::{Context, Layer};

/// No hash maps here: a `RandomState` draws from the system's randomness,
/// which madsim serves from the seed, and a draw in one run of a seed
/// and not in the next would break its determinism check.
struct Counts {
    /// Each event callsite's name, by the address of its static
    /// metadata, made once (names are leaked: a few hundred callsites at
    /// most).
    names: BTreeMap<usize, &'static str>,
    /// Occurrences since the last [`take`], by name.
    seen: BTreeMap<&'static str, u64>,
}

static COUNTS: Mutex<Counts> = Mutex::new(Counts {
    names: BTreeMap::new(),
    seen: BTreeMap::new(),
});

/// Whether an event is counted: one of weir's crates (the simulator's own
/// excepted), DEBUG or above.
fn counted(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    metadata.is_event()
        && target.starts_with("weir_")
        && !target.starts_with("weir_sim")
        && *metadata.level() <= Level::DEBUG
}

/// The layer that counts events; callsites it does not count stay
/// disabled unless another layer wants them.
pub fn counter<S>() -> Filtered<EventCounter, impl tracing_subscriber::layer::Filter<S>, S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    EventCounter.with_filter(filter_fn(counted))
}

/// Counts each event it sees under its name.
pub struct EventCounter;

impl<S: Subscriber> Layer<S> for EventCounter {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let callsite = std::ptr::from_ref(event.metadata()) as usize;
        let mut counts = COUNTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let name = match counts.names.get(&callsite) {
            Some(name) => *name,
            None => {
                let name = name_of(event);
                counts.names.insert(callsite, name);
                name
            }
        };
        *counts.seen.entry(name).or_default() += 1;
    }
}

/// `crate: message`, leaked (made once per callsite).
fn name_of(event: &Event<'_>) -> &'static str {
    let mut message = Message(None);
    event.record(&mut message);
    let krate = event.metadata().target().split("::").next().unwrap_or("?");
    let text = message
        .0
        .unwrap_or_else(|| event.metadata().name().to_string());
    Box::leak(format!("{krate}: {text}").into_boxed_str())
}

struct Message(Option<String>);

/// The event's message: its first field named `message` (a later one is
/// a field the caller named so).
impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" && self.0.is_none() {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" && self.0.is_none() {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// The events counted since the last call, by name (and starts counting
/// afresh).
pub fn take() -> BTreeMap<&'static str, u64> {
    let mut counts = COUNTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    std::mem::take(&mut counts.seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn weirs_events_are_counted_by_crate_and_message_and_others_are_not() {
        let subscriber = tracing_subscriber::registry().with(counter());
        take();
        tracing::subscriber::with_default(subscriber, || {
            for attempt in 0..3 {
                tracing::warn!(target: "weir_log::partition", attempt, "a torn tail was cut");
            }
            tracing::debug!(target: "weir_server::cluster", topic = "t", "a later local topic: waiting");
            let message = "a field named so";
            tracing::info!(target: "weir_kafka::handlers", message, "configs not changed");
            tracing::trace!(target: "weir_server::cluster", "too fine to count");
            tracing::error!(target: "weir_sim::cluster", "the simulator's own");
            tracing::error!(target: "raft::raw_node", "another crate's");
        });
        let counted = take();
        let expected: BTreeMap<&str, u64> = [
            ("weir_log: a torn tail was cut", 3),
            ("weir_server: a later local topic: waiting", 1),
            ("weir_kafka: configs not changed", 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(counted, expected);
        assert!(take().is_empty(), "taken once");
    }
}
