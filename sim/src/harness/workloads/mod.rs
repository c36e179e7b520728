//! The clients. On the client node: producers and consumers of the stream
//! `s` and its group `g` (checked by [`crate::check`]), a reader blocked on
//! `s`, churn clients that drive their own keys through every
//! state-changing stream command against the model ([`crate::model`]), an
//! admin client that starts command-log rewrites, and a publisher and a
//! subscriber. On the log node: the log workload ([`log`]). Which of them
//! run is the seed's choice ([`super::Features`]).

pub(crate) mod admin;
pub(crate) mod churn;
pub(crate) mod kafka;
pub(crate) mod log;
pub(crate) mod pubsub;
pub(crate) mod stream;

use std::sync::Arc;

use madsim::time::Instant;

use super::{seeded, SharedRef, World};

/// What every client task gets.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) shared: SharedRef,
    pub(crate) started: Instant,
    /// Chance per request that the client hangs up mid-request.
    pub(crate) disconnect: f64,
}

/// Producers of `s`.
pub(crate) const PRODUCERS: u32 = 3;
/// Consumers of `s` in group `g`.
pub(crate) const CONSUMERS: u32 = 2;

/// Starts the client tasks the seed turned on. They run on their own (a
/// dropped madsim handle detaches) and stop through the flags in `Shared`.
pub(crate) fn spawn(world: &mut World) {
    let context = Context {
        shared: Arc::clone(&world.shared),
        started: world.started,
        disconnect: world.swarm.disconnect,
    };
    let group_partitions = kafka::group_partitions(&world.features);
    for &index in &group_partitions {
        let (context, rng) = (context.clone(), seeded(&mut world.rng));
        world
            .client_node
            .spawn(async move { kafka::produce(index, context, rng).await });
    }
    for member in 0..kafka::MEMBERS {
        let (context, rng) = (context.clone(), seeded(&mut world.rng));
        let partitions = group_partitions.clone();
        world
            .client_node
            .spawn(async move { kafka::member(member, context, partitions, rng).await });
    }
    for producer in 0..PRODUCERS {
        let (context, rng) = (context.clone(), seeded(&mut world.rng));
        world
            .client_node
            .spawn(async move { stream::produce(producer, context, rng).await });
    }
    for consumer in 0..CONSUMERS {
        let (context, rng) = (context.clone(), seeded(&mut world.rng));
        world
            .client_node
            .spawn(async move { stream::consume(consumer, context, rng).await });
    }
    if world.features.watchers {
        let context = context.clone();
        world
            .client_node
            .spawn(async move { stream::watch(context).await });
    }
    for key in 0..world.features.churn_keys {
        let (context, rng) = (context.clone(), seeded(&mut world.rng));
        let features = world.features.clone();
        world
            .client_node
            .spawn(async move { churn::churn(key, context, features, rng).await });
    }
    if world.features.rewrites > 0.0 {
        let (context, rng) = (context.clone(), seeded(&mut world.rng));
        let rate = world.features.rewrites;
        let crash_during = if world.swarm.crash > 0.0 { 0.3 } else { 0.0 };
        world
            .client_node
            .spawn(async move { admin::rewrites(context, rate, crash_during, rng).await });
    }
    if world.features.pubsub {
        let context_two = context.clone();
        world
            .client_node
            .spawn(async move { pubsub::subscribe(context_two).await });
        let rng = seeded(&mut world.rng);
        world
            .client_node
            .spawn(async move { pubsub::publish(context, rng).await });
    }
}
