//! Pub/Sub: channels and glob patterns, at-most-once delivery into bounded
//! per-subscriber queues.
//!
//! The engine delivers a published message into the queue of every
//! subscriber of the channel and of every matching pattern (a subscriber
//! matching both gets it twice, as in Redis). The server drains the queues
//! to the connections. A queue has Redis's client-output-buffer limits for
//! pub/sub: past `hard_bytes`, or past `soft_bytes` for longer than
//! `soft_seconds`, the subscriber is disconnected and counted as a drop;
//! nothing is ever stored for later.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::engine::ClientId;

/// Output limits of a subscriber's queue (Redis: 32 MiB hard, 8 MiB soft
/// for 60 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Disconnect as soon as the queue holds more than this.
    pub hard_bytes: usize,
    /// Disconnect when the queue holds more than this ...
    pub soft_bytes: usize,
    /// ... for this long.
    pub soft_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hard_bytes: 32 << 20,
            soft_bytes: 8 << 20,
            soft_seconds: 60,
        }
    }
}

/// A message waiting in a subscriber's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// `["message", channel, payload]`.
    Message {
        /// The channel.
        channel: Vec<u8>,
        /// The payload.
        payload: Vec<u8>,
    },
    /// `["pmessage", pattern, channel, payload]`.
    PatternMessage {
        /// The pattern that matched.
        pattern: Vec<u8>,
        /// The channel.
        channel: Vec<u8>,
        /// The payload.
        payload: Vec<u8>,
    },
}

impl Message {
    fn bytes(&self) -> usize {
        match self {
            Message::Message { channel, payload } => channel.len() + payload.len() + 32,
            Message::PatternMessage {
                pattern,
                channel,
                payload,
            } => pattern.len() + channel.len() + payload.len() + 40,
        }
    }
}

#[derive(Debug, Default)]
struct Subscriber {
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
    queue: VecDeque<Message>,
    queued_bytes: usize,
    /// When the queue went over the soft limit.
    over_soft_since: Option<u64>,
}

/// Pub/Sub state.
#[derive(Debug, Default)]
pub struct PubSub {
    channels: BTreeMap<Vec<u8>, BTreeSet<ClientId>>,
    /// Pattern -> subscribers, in order of first subscription.
    patterns: BTreeMap<Vec<u8>, BTreeSet<ClientId>>,
    subscribers: BTreeMap<ClientId, Subscriber>,
    limits: Limits,
    /// Subscribers disconnected for their queue, since start.
    dropped: u64,
    /// Clients to disconnect, for the server to act on.
    to_disconnect: Vec<ClientId>,
    /// Clients whose queue went from empty to not empty, for the server to
    /// wake.
    ready: Vec<ClientId>,
}

impl PubSub {
    /// Sets the queue limits.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Subscribes `client` to `channel`; returns its subscription count.
    pub fn subscribe(&mut self, client: ClientId, channel: &[u8]) -> usize {
        self.channels
            .entry(channel.to_vec())
            .or_default()
            .insert(client);
        let subscriber = self.subscribers.entry(client).or_default();
        subscriber.channels.insert(channel.to_vec());
        subscriber.channels.len() + subscriber.patterns.len()
    }

    /// Unsubscribes `client` from `channel`; returns its subscription count.
    pub fn unsubscribe(&mut self, client: ClientId, channel: &[u8]) -> usize {
        if let Some(clients) = self.channels.get_mut(channel) {
            clients.remove(&client);
            if clients.is_empty() {
                self.channels.remove(channel);
            }
        }
        self.count_after(client, |subscriber| {
            subscriber.channels.remove(channel);
        })
    }

    /// Subscribes `client` to a glob pattern; returns its subscription
    /// count.
    pub fn psubscribe(&mut self, client: ClientId, pattern: &[u8]) -> usize {
        self.patterns
            .entry(pattern.to_vec())
            .or_default()
            .insert(client);
        let subscriber = self.subscribers.entry(client).or_default();
        subscriber.patterns.insert(pattern.to_vec());
        subscriber.channels.len() + subscriber.patterns.len()
    }

    /// Unsubscribes `client` from a pattern; returns its subscription count.
    pub fn punsubscribe(&mut self, client: ClientId, pattern: &[u8]) -> usize {
        if let Some(clients) = self.patterns.get_mut(pattern) {
            clients.remove(&client);
            if clients.is_empty() {
                self.patterns.remove(pattern);
            }
        }
        self.count_after(client, |subscriber| {
            subscriber.patterns.remove(pattern);
        })
    }

    fn count_after(&mut self, client: ClientId, change: impl FnOnce(&mut Subscriber)) -> usize {
        let Some(subscriber) = self.subscribers.get_mut(&client) else {
            return 0;
        };
        change(subscriber);
        let count = subscriber.channels.len() + subscriber.patterns.len();
        if count == 0 && subscriber.queue.is_empty() {
            self.subscribers.remove(&client);
        }
        count
    }

    /// The channels `client` is subscribed to, sorted.
    pub fn channels_of(&self, client: ClientId) -> Vec<Vec<u8>> {
        self.subscribers
            .get(&client)
            .map(|subscriber| subscriber.channels.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The patterns `client` is subscribed to, sorted.
    pub fn patterns_of(&self, client: ClientId) -> Vec<Vec<u8>> {
        self.subscribers
            .get(&client)
            .map(|subscriber| subscriber.patterns.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many channels and patterns `client` is subscribed to.
    pub fn subscription_count(&self, client: ClientId) -> usize {
        self.subscribers.get(&client).map_or(0, |subscriber| {
            subscriber.channels.len() + subscriber.patterns.len()
        })
    }

    /// Forgets a client entirely (it disconnected).
    pub fn remove_client(&mut self, client: ClientId) {
        for channel in self.channels_of(client) {
            self.unsubscribe(client, &channel);
        }
        for pattern in self.patterns_of(client) {
            self.punsubscribe(client, &pattern);
        }
        self.subscribers.remove(&client);
    }

    /// Publishes: queues the message for every receiver and returns how
    /// many receivers there were. `now_ms` times the soft limit.
    pub fn publish(&mut self, channel: &[u8], payload: &[u8], now_ms: u64) -> usize {
        let mut deliveries: Vec<(ClientId, Message)> = Vec::new();
        if let Some(clients) = self.channels.get(channel) {
            for client in clients {
                deliveries.push((
                    *client,
                    Message::Message {
                        channel: channel.to_vec(),
                        payload: payload.to_vec(),
                    },
                ));
            }
        }
        for (pattern, clients) in &self.patterns {
            if glob_match(pattern, channel, false) {
                for client in clients {
                    deliveries.push((
                        *client,
                        Message::PatternMessage {
                            pattern: pattern.clone(),
                            channel: channel.to_vec(),
                            payload: payload.to_vec(),
                        },
                    ));
                }
            }
        }
        let receivers = deliveries.len();
        for (client, message) in deliveries {
            self.enqueue(client, message, now_ms);
        }
        receivers
    }

    fn enqueue(&mut self, client: ClientId, message: Message, now_ms: u64) {
        let limits = self.limits;
        let Some(subscriber) = self.subscribers.get_mut(&client) else {
            return;
        };
        if subscriber.queue.is_empty() {
            self.ready.push(client);
        }
        subscriber.queued_bytes += message.bytes();
        subscriber.queue.push_back(message);
        let over_hard = limits.hard_bytes != 0 && subscriber.queued_bytes > limits.hard_bytes;
        let over_soft = limits.soft_bytes != 0 && subscriber.queued_bytes > limits.soft_bytes;
        let soft_expired = if over_soft {
            let since = *subscriber.over_soft_since.get_or_insert(now_ms);
            now_ms.saturating_sub(since) >= limits.soft_seconds * 1000
        } else {
            subscriber.over_soft_since = None;
            false
        };
        if over_hard || soft_expired {
            self.dropped += 1;
            self.remove_client(client);
            self.to_disconnect.push(client);
        }
    }

    /// Takes the messages queued for `client`.
    pub fn drain(&mut self, client: ClientId) -> Vec<Message> {
        let Some(subscriber) = self.subscribers.get_mut(&client) else {
            return Vec::new();
        };
        subscriber.queued_bytes = 0;
        subscriber.over_soft_since = None;
        subscriber.queue.drain(..).collect()
    }

    /// Clients with queued messages.
    pub fn clients_with_messages(&self) -> Vec<ClientId> {
        self.subscribers
            .iter()
            .filter(|(_, subscriber)| !subscriber.queue.is_empty())
            .map(|(client, _)| *client)
            .collect()
    }

    /// Clients whose queue became non-empty since the last call (each once
    /// until its queue is drained), to wake so that they drain it.
    pub fn take_ready(&mut self) -> Vec<ClientId> {
        std::mem::take(&mut self.ready)
    }

    /// Clients disconnected for exceeding their queue limits, to close.
    pub fn take_disconnected(&mut self) -> Vec<ClientId> {
        std::mem::take(&mut self.to_disconnect)
    }

    /// Subscribers dropped for their queue since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The channels with subscribers, sorted.
    pub fn channels(&self) -> impl Iterator<Item = &[u8]> {
        self.channels.keys().map(Vec::as_slice)
    }

    /// Subscribers of `channel` (patterns not counted, as PUBSUB NUMSUB).
    pub fn subscribers_of(&self, channel: &[u8]) -> usize {
        self.channels.get(channel).map_or(0, BTreeSet::len)
    }

    /// Messages waiting for `client` and their bytes.
    pub fn queued(&self, client: ClientId) -> (usize, usize) {
        self.subscribers.get(&client).map_or((0, 0), |subscriber| {
            (subscriber.queue.len(), subscriber.queued_bytes)
        })
    }

    /// Channels with subscribers.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Patterns with subscribers.
    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }
}

/// Redis's glob matching (`stringmatchlen`): `*`, `?`, `[...]` with ranges
/// and `^` negation, `\` escapes.
pub fn glob_match(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    let mut depth = 0;
    glob_match_at(pattern, text, nocase, &mut depth)
}

const GLOB_DEPTH_MAX: usize = 1000;

fn glob_match_at(pattern: &[u8], text: &[u8], nocase: bool, depth: &mut usize) -> bool {
    *depth += 1;
    if *depth > GLOB_DEPTH_MAX {
        return false;
    }
    let lower = |byte: u8| {
        if nocase {
            byte.to_ascii_lowercase()
        } else {
            byte
        }
    };
    let (mut p, mut t) = (0, 0);
    while p < pattern.len() {
        match pattern[p] {
            b'*' => {
                while p + 1 < pattern.len() && pattern[p + 1] == b'*' {
                    p += 1;
                }
                if p + 1 == pattern.len() {
                    return true;
                }
                for start in t..=text.len() {
                    if glob_match_at(&pattern[p + 1..], &text[start..], nocase, depth) {
                        return true;
                    }
                }
                return false;
            }
            b'?' => {
                if t >= text.len() {
                    return false;
                }
                t += 1;
            }
            b'[' => {
                if t >= text.len() {
                    return false;
                }
                p += 1;
                let negate = p < pattern.len() && pattern[p] == b'^';
                if negate {
                    p += 1;
                }
                let mut matched = false;
                loop {
                    if p >= pattern.len() {
                        p -= 1;
                        break;
                    }
                    if pattern[p] == b'\\' && p + 2 < pattern.len() {
                        p += 1;
                        if lower(pattern[p]) == lower(text[t]) {
                            matched = true;
                        }
                    } else if pattern[p] == b']' {
                        break;
                    } else if p + 2 < pattern.len() && pattern[p + 1] == b'-' {
                        let (mut start, mut end) = (lower(pattern[p]), lower(pattern[p + 2]));
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        let byte = lower(text[t]);
                        if byte >= start && byte <= end {
                            matched = true;
                        }
                        p += 2;
                    } else if lower(pattern[p]) == lower(text[t]) {
                        matched = true;
                    }
                    p += 1;
                }
                if matched == negate {
                    return false;
                }
                t += 1;
            }
            b'\\' if p + 1 < pattern.len() => {
                p += 1;
                if t >= text.len() || lower(pattern[p]) != lower(text[t]) {
                    return false;
                }
                t += 1;
            }
            byte => {
                if t >= text.len() || lower(byte) != lower(text[t]) {
                    return false;
                }
                t += 1;
            }
        }
        p += 1;
    }
    t == text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns_match_like_redis() {
        let check = |pattern: &str, text: &str, expected: bool| {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes(), false),
                expected,
                "{pattern} ~ {text}"
            );
        };
        check("*", "", true);
        check("news.*", "news.tech", true);
        check("news.*", "news", false);
        check("h?llo", "hello", true);
        check("h?llo", "hllo", false);
        check("h[ae]llo", "hallo", true);
        check("h[^e]llo", "hello", false);
        check("h[a-b]llo", "hbllo", true);
        check("h\\*llo", "h*llo", true);
        check("h\\*llo", "hello", false);
        check("a*b*c", "aXXbYYc", true);
        check("a*b*c", "aXXbYY", false);
    }

    #[test]
    fn a_subscriber_of_a_channel_and_a_pattern_gets_the_message_twice() {
        let mut pubsub = PubSub::default();
        assert_eq!(pubsub.subscribe(1, b"news.tech"), 1);
        assert_eq!(pubsub.psubscribe(1, b"news.*"), 2);
        assert_eq!(pubsub.subscribe(2, b"other"), 1);
        assert_eq!(pubsub.publish(b"news.tech", b"hi", 0), 2);
        assert_eq!(pubsub.drain(1).len(), 2);
        assert!(pubsub.drain(2).is_empty());
        assert_eq!(pubsub.unsubscribe(1, b"news.tech"), 1);
        assert_eq!(pubsub.punsubscribe(1, b"news.*"), 0);
        assert_eq!(pubsub.publish(b"news.tech", b"hi", 0), 0);
    }

    #[test]
    fn a_slow_subscriber_is_dropped_past_its_limits_and_counted() {
        let mut pubsub = PubSub::default();
        pubsub.set_limits(Limits {
            hard_bytes: 1000,
            soft_bytes: 300,
            soft_seconds: 10,
        });
        pubsub.subscribe(1, b"c");
        pubsub.subscribe(2, b"c");
        let payload = [0u8; 100];
        for _ in 0..3 {
            pubsub.publish(b"c", &payload, 0);
        }
        assert!(
            pubsub.take_disconnected().is_empty(),
            "over soft, not yet long enough"
        );
        pubsub.drain(2);
        pubsub.publish(b"c", &payload, 10_000);
        assert_eq!(pubsub.take_disconnected(), [1]);
        assert_eq!(pubsub.dropped(), 1);
        for _ in 0..20 {
            pubsub.publish(b"c", &payload, 10_000);
        }
        assert_eq!(pubsub.take_disconnected(), [2], "hard limit");
        assert_eq!(pubsub.publish(b"c", &payload, 10_000), 0);
    }
}
