//! Helpers shared by the stream engine's integration tests.
#![allow(dead_code)]

pub mod wire;

use rand::RngExt;
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_stream::{Context, Engine, Outcome, Reply};

/// Generates commands over a few keys, groups and consumers, with explicit
/// IDs that mostly increase.
pub struct Generator {
    rng: Xoshiro256PlusPlus,
    next_ms: u64,
}

impl Generator {
    /// A generator drawing from `rng`.
    pub fn new(rng: Xoshiro256PlusPlus) -> Self {
        Self { rng, next_ms: 1 }
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.rng.random_range(0..options.len())]
    }

    fn key(&mut self) -> String {
        self.pick(&["s1", "s1", "s1", "s2", "missing"]).to_string()
    }

    fn group(&mut self) -> String {
        self.pick(&["g1", "g1", "g2", "nogroup"]).to_string()
    }

    fn consumer(&mut self) -> String {
        self.pick(&["alice", "bob", "carol"]).to_string()
    }

    /// An existing-ish ID: around the IDs added so far.
    fn id(&mut self) -> String {
        let ms = self.rng.random_range(0..=self.next_ms + 2);
        match self.rng.random_range(0..10) {
            0 => format!("{ms}"),
            1 => self
                .pick(&["0", "0-0", "18446744073709551615-18446744073709551615"])
                .to_string(),
            2 => self.pick(&["bad", "1-x", "-1", "1-2-3", ""]).to_string(),
            _ => format!("{ms}-{}", self.rng.random_range(0..3)),
        }
    }

    fn bound(&mut self, start: bool) -> String {
        match self.rng.random_range(0..8) {
            0 => {
                if start {
                    "-".into()
                } else {
                    "+".into()
                }
            }
            1 => format!("({}", self.id()),
            2 => self.pick(&["-", "+", "(-", "(+", "(0-0"]).to_string(),
            _ => self.id(),
        }
    }

    fn value(&mut self) -> String {
        match self.rng.random_range(0..6) {
            0 => self.rng.random_range(0..100_000).to_string(),
            1 => "x".repeat(self.rng.random_range(0..90)),
            2 => format!("-{}", self.rng.random_range(1..5000)),
            _ => format!("v{}", self.rng.random_range(0..10)),
        }
    }

    fn fields(&mut self) -> Vec<String> {
        let layouts: &[&[&str]] = &[&["f"], &["f"], &["f", "g"], &["a", "b", "c"], &["12"]];
        let names = layouts[self.rng.random_range(0..layouts.len())];
        let mut fields = Vec::new();
        for name in names {
            fields.push(name.to_string());
            fields.push(self.value());
        }
        fields
    }

    fn trim_options(&mut self) -> Vec<String> {
        let mut options = Vec::new();
        let strategy = self.pick(&["MAXLEN", "MINID", "maxlen"]);
        options.push(strategy.to_string());
        let approx = self.pick(&["", "~", "=", "~"]);
        if !approx.is_empty() {
            options.push(approx.to_string());
        }
        if strategy.eq_ignore_ascii_case("MAXLEN") {
            options.push(self.rng.random_range(0..12).to_string());
        } else {
            options.push(self.id());
        }
        if self.rng.random_bool(0.3) {
            options.push("LIMIT".into());
            options.push(self.rng.random_range(0..6).to_string());
        }
        options
    }

    /// A random command.
    pub fn command(&mut self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        match self.rng.random_range(0..100) {
            0..=24 => {
                args.push("XADD".into());
                args.push(self.key());
                if self.rng.random_bool(0.1) {
                    args.push("NOMKSTREAM".into());
                }
                if self.rng.random_bool(0.25) {
                    args.extend(self.trim_options());
                }
                self.next_ms += self.rng.random_range(0..3);
                let id = match self.rng.random_range(0..10) {
                    0 => format!("{}-*", self.next_ms),
                    1 => self.id(),
                    _ => format!("{}-{}", self.next_ms, self.rng.random_range(0..3)),
                };
                args.push(id);
                args.extend(self.fields());
                if self.rng.random_bool(0.02) {
                    args.pop();
                }
            }
            25..=29 => {
                args.extend(["XDEL".to_string(), self.key()]);
                for _ in 0..self.rng.random_range(1..4) {
                    args.push(self.id());
                }
            }
            30..=33 => {
                args.extend(["XTRIM".to_string(), self.key()]);
                args.extend(self.trim_options());
            }
            34..=39 => {
                let reverse = self.rng.random_bool(0.3);
                args.push(if reverse { "XREVRANGE" } else { "XRANGE" }.into());
                args.push(self.key());
                let (start, end) = (self.bound(true), self.bound(false));
                if reverse {
                    args.extend([end, start]);
                } else {
                    args.extend([start, end]);
                }
                if self.rng.random_bool(0.4) {
                    args.push("COUNT".into());
                    args.push(self.rng.random_range(-1..5).to_string());
                }
            }
            40..=41 => args.extend(["XLEN".to_string(), self.key()]),
            42..=45 => {
                args.push("XREAD".into());
                if self.rng.random_bool(0.4) {
                    args.extend(["COUNT".to_string(), self.rng.random_range(0..4).to_string()]);
                }
                args.push("STREAMS".into());
                let keys = self.rng.random_range(1..3);
                let mut ids = Vec::new();
                for _ in 0..keys {
                    args.push(self.key());
                    ids.push(if self.rng.random_bool(0.2) {
                        "$".to_string()
                    } else {
                        self.id()
                    });
                }
                args.extend(ids);
            }
            46..=51 => {
                args.extend([
                    "XGROUP".to_string(),
                    "CREATE".to_string(),
                    self.key(),
                    self.group(),
                ]);
                args.push(if self.rng.random_bool(0.3) {
                    "$".into()
                } else {
                    self.id()
                });
                if self.rng.random_bool(0.5) {
                    args.push("MKSTREAM".into());
                }
                if self.rng.random_bool(0.2) {
                    args.extend([
                        "ENTRIESREAD".to_string(),
                        self.rng.random_range(-2..6).to_string(),
                    ]);
                }
            }
            52..=54 => {
                args.extend([
                    "XGROUP".to_string(),
                    "SETID".to_string(),
                    self.key(),
                    self.group(),
                ]);
                args.push(if self.rng.random_bool(0.2) {
                    "$".into()
                } else {
                    self.id()
                });
                if self.rng.random_bool(0.3) {
                    args.extend([
                        "ENTRIESREAD".to_string(),
                        self.rng.random_range(-2..6).to_string(),
                    ]);
                }
            }
            55 => args.extend([
                "XGROUP".to_string(),
                "DESTROY".to_string(),
                self.key(),
                self.group(),
            ]),
            56 => {
                let sub = self.pick(&["CREATECONSUMER", "DELCONSUMER"]).to_string();
                args.extend([
                    "XGROUP".to_string(),
                    sub,
                    self.key(),
                    self.group(),
                    self.consumer(),
                ]);
            }
            57..=66 => {
                args.extend([
                    "XREADGROUP".to_string(),
                    "GROUP".to_string(),
                    self.group(),
                    self.consumer(),
                ]);
                if self.rng.random_bool(0.5) {
                    args.extend(["COUNT".to_string(), self.rng.random_range(0..4).to_string()]);
                }
                if self.rng.random_bool(0.1) {
                    args.push("NOACK".into());
                }
                args.push("STREAMS".into());
                args.push(self.key());
                args.push(if self.rng.random_bool(0.7) {
                    ">".into()
                } else {
                    self.id()
                });
            }
            67..=72 => {
                args.extend(["XACK".to_string(), self.key(), self.group()]);
                for _ in 0..self.rng.random_range(1..4) {
                    args.push(self.id());
                }
            }
            73..=77 => {
                args.extend(["XPENDING".to_string(), self.key(), self.group()]);
                if self.rng.random_bool(0.6) {
                    if self.rng.random_bool(0.3) {
                        args.extend([
                            "IDLE".to_string(),
                            self.pick(&["0", "100000000"]).to_string(),
                        ]);
                    }
                    args.push(self.bound(true));
                    args.push(self.bound(false));
                    args.push(self.rng.random_range(-1..6).to_string());
                    if self.rng.random_bool(0.4) {
                        args.push(self.consumer());
                    }
                }
            }
            78..=82 => {
                args.extend([
                    "XCLAIM".to_string(),
                    self.key(),
                    self.group(),
                    self.consumer(),
                ]);
                args.push(self.pick(&["0", "0", "100000000", "-5"]).to_string());
                for _ in 0..self.rng.random_range(1..4) {
                    args.push(self.id());
                }
                for option in ["FORCE", "JUSTID"] {
                    if self.rng.random_bool(0.2) {
                        args.push(option.into());
                    }
                }
                if self.rng.random_bool(0.2) {
                    args.extend([
                        "RETRYCOUNT".to_string(),
                        self.rng.random_range(0..5).to_string(),
                    ]);
                }
                if self.rng.random_bool(0.15) {
                    args.extend(["TIME".to_string(), "1000".to_string()]);
                }
                if self.rng.random_bool(0.15) {
                    args.extend(["LASTID".to_string(), self.id()]);
                }
            }
            83..=86 => {
                args.extend([
                    "XAUTOCLAIM".to_string(),
                    self.key(),
                    self.group(),
                    self.consumer(),
                ]);
                args.push(self.pick(&["0", "100000000"]).to_string());
                args.push(self.bound(true));
                if self.rng.random_bool(0.5) {
                    args.extend(["COUNT".to_string(), self.rng.random_range(0..4).to_string()]);
                }
                if self.rng.random_bool(0.3) {
                    args.push("JUSTID".into());
                }
            }
            87..=88 => {
                args.extend(["XSETID".to_string(), self.key(), self.id()]);
                if self.rng.random_bool(0.3) {
                    args.extend([
                        "ENTRIESADDED".to_string(),
                        self.rng.random_range(0..30).to_string(),
                    ]);
                }
                if self.rng.random_bool(0.3) {
                    args.extend(["MAXDELETEDID".to_string(), self.id()]);
                }
            }
            89..=94 => match self.rng.random_range(0..4) {
                0 => args.extend(["XINFO".to_string(), "STREAM".to_string(), self.key()]),
                1 => {
                    args.extend([
                        "XINFO".to_string(),
                        "STREAM".to_string(),
                        self.key(),
                        "FULL".to_string(),
                    ]);
                    if self.rng.random_bool(0.3) {
                        args.extend(["COUNT".to_string(), self.rng.random_range(0..3).to_string()]);
                    }
                }
                2 => args.extend(["XINFO".to_string(), "GROUPS".to_string(), self.key()]),
                _ => args.extend([
                    "XINFO".to_string(),
                    "CONSUMERS".to_string(),
                    self.key(),
                    self.group(),
                ]),
            },
            95 => match self.rng.random_range(0..20) {
                0 => args.push("FLUSHALL".to_string()),
                1 => args.extend(["FLUSHDB".to_string(), "ASYNC".to_string()]),
                _ => args.extend(["DEL".to_string(), self.key()]),
            },
            96 => args.extend(["EXISTS".to_string(), self.key(), self.key()]),
            97 => args.extend(["TYPE".to_string(), self.key()]),
            _ => {
                // Malformed on purpose.
                let name =
                    self.pick(&["XADD", "XRANGE", "XGROUP", "XREADGROUP", "XINFO", "XCLAIM"]);
                args.push(name.to_string());
                for _ in 0..self.rng.random_range(0..3) {
                    args.push(self.key());
                }
            }
        }
        args
    }
}

/// Everything observable about the engine's state, as RESP2 bytes of the
/// replies of read commands over every key, group and consumer. Consumer
/// idle times and `radix-tree-*` (node layout) are left out when
/// `with_layout` is false.
pub fn fingerprint(engine: &mut Engine, with_layout: bool) -> String {
    String::from_utf8_lossy(&fingerprint_bytes(engine, with_layout)).replace("\r\n", " ")
}

/// Panics with the first difference between two fingerprints.
pub fn assert_same(actual: &str, expected: &str, message: &str) {
    if actual == expected {
        return;
    }
    let at = actual
        .bytes()
        .zip(expected.bytes())
        .position(|(left, right)| left != right)
        .unwrap_or(actual.len().min(expected.len()));
    let window = |text: &str| -> String {
        let start = at.saturating_sub(120);
        text.get(start..(at + 120).min(text.len()))
            .unwrap_or("")
            .to_string()
    };
    panic!(
        "{message}: states differ at byte {at}\n  got:      ...{}...\n  expected: ...{}...",
        window(actual),
        window(expected)
    );
}

fn fingerprint_bytes(engine: &mut Engine, with_layout: bool) -> Vec<u8> {
    let mut keys: Vec<Vec<u8>> = engine.keys().map(<[u8]>::to_vec).collect();
    keys.sort();
    let mut out = Vec::new();
    let context = Context::default();
    let call = |engine: &mut Engine, args: &[&[u8]], out: &mut Vec<u8>| -> Reply {
        let Outcome::Reply(reply) = engine.execute(&context, args) else {
            panic!("a read blocked");
        };
        out.extend_from_slice(&reply.to_resp2());
        reply
    };
    for key in &keys {
        out.extend_from_slice(key);
        call(engine, &[b"XRANGE", key, b"-", b"+"], &mut out);
        let info = match engine.execute(&context, &[b"XINFO", b"STREAM", key]) {
            Outcome::Reply(Reply::Map(fields)) => fields,
            other => panic!("XINFO STREAM: {other:?}"),
        };
        for (name, value) in info {
            let skip = matches!(&name, Reply::Bulk(bytes) if bytes.starts_with(b"radix-tree"));
            if with_layout || !skip {
                out.extend_from_slice(&name.to_resp2());
                out.extend_from_slice(&value.to_resp2());
            }
        }
        call(engine, &[b"XINFO", b"GROUPS", key], &mut out);
        let groups: Vec<Vec<u8>> = engine
            .stream(key)
            .map(|stream| stream.groups.keys().cloned().collect())
            .unwrap_or_default();
        for group in groups {
            call(
                engine,
                &[b"XPENDING", key, &group, b"-", b"+", b"1000000"],
                &mut out,
            );
            let consumers: Vec<Vec<u8>> = engine
                .stream(key)
                .and_then(|stream| stream.groups.get(&group))
                .map(|state| {
                    state
                        .consumers
                        .iter()
                        .map(|(name, consumer)| {
                            let mut line = name.to_vec();
                            line.extend_from_slice(
                                format!(" pending {:?}", consumer.pending).as_bytes(),
                            );
                            line
                        })
                        .collect()
                })
                .unwrap_or_default();
            for consumer in consumers {
                out.extend_from_slice(&consumer);
            }
        }
    }
    out
}

/// Runs `body` for every seed in `seeds`, or only for the seed in the
/// environment variable `variable` when it is set; when a seed fails, prints
/// it and the command that replays it alone (`replay`, with `{seed}` and
/// `{variable}` filled in), then fails.
pub fn for_each_seed(
    variable: &str,
    seeds: std::ops::Range<u64>,
    replay: &str,
    mut body: impl FnMut(u64),
) {
    let chosen: Vec<u64> = match std::env::var(variable) {
        Ok(seed) => vec![seed
            .parse()
            .unwrap_or_else(|_| panic!("{variable} must be a number, not {seed:?}"))],
        Err(_) => seeds.collect(),
    };
    for seed in chosen {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(seed)));
        if let Err(panic) = result {
            eprintln!("failed at seed {seed}; replay it with:\n  {variable}={seed} {replay}");
            std::panic::resume_unwind(panic);
        }
    }
}

/// Whether only one seed is being replayed (so totals asserted over a whole
/// seed range do not apply).
pub fn replaying_one_seed(variable: &str) -> bool {
    std::env::var(variable).is_ok()
}
