//! The seed runner: `weir-sim [--cluster] [--seeds N] [--from S] [--seed S]
//! [--check-determinism] [--stop-at-first] [--jobs N]`. `--jobs N` shares
//! the seeds among N processes of itself (seed `from + k` runs in job
//! `k % N`); a seed's run does not depend on the process that runs it.
//! Run it through `cargo xtask sim`, which builds it with `--cfg madsim`.

#[cfg(not(madsim))]
fn main() {
    eprintln!(
        "weir-sim runs only when built with --cfg madsim: use `cargo xtask sim --seeds N` \
         (or `--seed S`, `--check-determinism --seeds N`)"
    );
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    runner::main();
}

#[cfg(madsim)]
mod runner {
    use std::collections::BTreeMap;
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    use weir_sim::cluster::{run_cluster_seed, run_cluster_seed_checked};
    use weir_sim::coverage::{below_floors, cluster_events_below_floors};
    use weir_sim::events;
    use weir_sim::harness::{run_seed, run_seed_checked, SeedReport};

    /// The line on which a job (a child process) hands its totals to the
    /// parent.
    const PARTIAL: &str = "WEIR-SIM-PARTIAL\t";

    /// Between the entries of a map on that line.
    const SEPARATOR: &str = "\u{1f}";

    struct Arguments {
        from: u64,
        seeds: u64,
        one: Option<u64>,
        determinism: bool,
        stop_at_first: bool,
        cluster: bool,
        /// Processes that share the seeds (each seed runs in one).
        jobs: u64,
        /// In a job: its number (it runs the seeds `from + job + k * jobs`).
        job: Option<u64>,
    }

    fn arguments() -> Result<Arguments, String> {
        let mut parsed = Arguments {
            from: 0,
            seeds: 100,
            one: None,
            determinism: false,
            stop_at_first: false,
            cluster: false,
            jobs: 1,
            job: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> Result<u64, String> {
                args.next()
                    .and_then(|value| value.parse().ok())
                    .ok_or(format!("{name} needs a number"))
            };
            match arg.as_str() {
                "--seeds" => parsed.seeds = number("--seeds")?,
                "--from" => parsed.from = number("--from")?,
                "--seed" => parsed.one = Some(number("--seed")?),
                "--check-determinism" => parsed.determinism = true,
                "--stop-at-first" => parsed.stop_at_first = true,
                "--cluster" => parsed.cluster = true,
                "--jobs" => parsed.jobs = number("--jobs")?.max(1),
                "--job" => parsed.job = Some(number("--job")?),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(parsed)
    }

    /// What a range of seeds found.
    #[derive(Default)]
    struct Totals {
        ran: usize,
        simulated: Duration,
        operations: u64,
        faults: BTreeMap<String, u64>,
        /// Seeds that reached each path.
        coverage: BTreeMap<String, u64>,
        /// Seeds whose nodes logged each event.
        events: BTreeMap<String, u64>,
        failed: Vec<u64>,
        nondeterministic: Vec<u64>,
    }

    impl Totals {
        fn add(&mut self, report: &SeedReport) {
            self.ran += 1;
            self.simulated += report.simulated;
            self.operations += report.operations;
            for (kind, n) in &report.faults {
                *self.faults.entry(kind.to_string()).or_default() += n;
            }
            for (path, n) in &report.coverage {
                if *n > 0 {
                    *self.coverage.entry(path.to_string()).or_default() += 1;
                }
            }
            for name in report.events.keys() {
                *self.events.entry(name.to_string()).or_default() += 1;
            }
        }

        fn merge(&mut self, other: Totals) {
            self.ran += other.ran;
            self.simulated += other.simulated;
            self.operations += other.operations;
            for (kind, n) in other.faults {
                *self.faults.entry(kind).or_default() += n;
            }
            for (path, n) in other.coverage {
                *self.coverage.entry(path).or_default() += n;
            }
            for (name, n) in other.events {
                *self.events.entry(name).or_default() += n;
            }
            self.failed.extend(other.failed);
            self.nondeterministic.extend(other.nondeterministic);
        }

        /// One line: tab-separated fields, maps as `name=n` joined by
        /// [`SEPARATOR`] (event messages hold `;` and `:`).
        fn encode(&self) -> String {
            let map = |map: &BTreeMap<String, u64>| {
                map.iter()
                    .map(|(name, n)| format!("{name}={n}"))
                    .collect::<Vec<_>>()
                    .join(SEPARATOR)
            };
            let list = |seeds: &[u64]| {
                seeds
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            format!(
                "{PARTIAL}{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                self.ran,
                self.simulated.as_nanos(),
                self.operations,
                map(&self.faults),
                map(&self.coverage),
                map(&self.events),
                list(&self.failed),
                list(&self.nondeterministic)
            )
        }

        fn decode(line: &str) -> Option<Totals> {
            let fields: Vec<&str> = line.strip_prefix(PARTIAL)?.split('\t').collect();
            let [ran, simulated, operations, faults, coverage, events, failed, nondeterministic] =
                fields[..]
            else {
                return None;
            };
            let map = |text: &str| -> Option<BTreeMap<String, u64>> {
                text.split(SEPARATOR)
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (name, n) = pair.rsplit_once('=')?;
                        Some((name.to_string(), n.parse().ok()?))
                    })
                    .collect()
            };
            let list = |text: &str| -> Option<Vec<u64>> {
                text.split(',')
                    .filter(|seed| !seed.is_empty())
                    .map(|seed| seed.parse().ok())
                    .collect()
            };
            Some(Totals {
                ran: ran.parse().ok()?,
                simulated: Duration::from_nanos(simulated.parse().ok()?),
                operations: operations.parse().ok()?,
                faults: map(faults)?,
                coverage: map(coverage)?,
                events: map(events)?,
                failed: list(failed)?,
                nondeterministic: list(nondeterministic)?,
            })
        }
    }

    pub fn main() {
        // WEIR_SIM_TRACE=debug (or info, trace): the nodes' own logs, for
        // looking into one seed.
        // The nodes' events are counted in every run.
        let level = std::env::var("WEIR_SIM_TRACE")
            .ok()
            .and_then(|level| level.parse::<tracing::Level>().ok());
        let trace = level.map(|level| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(LevelFilter::from_level(level))
        });
        tracing_subscriber::registry()
            .with(events::counter())
            .with(trace)
            .init();
        let arguments = match arguments() {
            Ok(arguments) => arguments,
            Err(error) => {
                eprintln!("weir-sim: {error}");
                std::process::exit(2);
            }
        };
        let wall = Instant::now();
        let parallel = arguments.jobs > 1 && arguments.one.is_none() && !arguments.stop_at_first;
        let totals = match arguments.job {
            Some(_) => {
                let totals = run_seeds(&arguments);
                println!("{}", totals.encode());
                return;
            }
            None if parallel => run_jobs(&arguments),
            None => run_seeds(&arguments),
        };
        report(&arguments, &totals, wall.elapsed().as_secs_f64());
    }

    /// The seeds of this process: all of them, or its job's share.
    fn seeds(arguments: &Arguments) -> Vec<u64> {
        if let Some(seed) = arguments.one {
            return vec![seed];
        }
        let all = arguments.from..arguments.from + arguments.seeds;
        match arguments.job {
            Some(job) => all
                .filter(|seed| (seed - arguments.from) % arguments.jobs == job)
                .collect(),
            None => all.collect(),
        }
    }

    fn run_seeds(arguments: &Arguments) -> Totals {
        let mut totals = Totals::default();
        for seed in seeds(arguments) {
            let (run, checked): (Runner, Runner) = if arguments.cluster {
                (run_cluster_seed, run_cluster_seed_checked)
            } else {
                (run_seed, run_seed_checked)
            };
            let mut report = if arguments.determinism {
                let first = guarded(checked, seed);
                events::take();
                let second = guarded(run, seed);
                if first.fingerprint != second.fingerprint {
                    totals.nondeterministic.push(seed);
                }
                first
            } else {
                events::take();
                guarded(run, seed)
            };
            report.events = events::take();
            let forbidden = weir_sim::coverage::forbidden_events_logged(&report.events);
            report.violations.extend(forbidden);
            if arguments.one.is_some() {
                for line in &report.trace {
                    println!("{line}");
                }
                println!("the nodes' events (times logged):");
                for (name, times) in &report.events {
                    println!("  {times:>6}  {name}");
                }
            }
            totals.add(&report);
            if !report.violations.is_empty() {
                print_violations(&report, arguments.cluster);
                totals.failed.push(seed);
                if arguments.stop_at_first {
                    break;
                }
            }
        }
        totals
    }

    /// Runs the seeds in `arguments.jobs` processes of this program (each
    /// seed is deterministic on its own, whichever process runs it),
    /// passing their output on and adding up their totals.
    fn run_jobs(arguments: &Arguments) -> Totals {
        let program = std::env::current_exe().expect("weir-sim's own path");
        let forwarded = without_jobs();
        let readers: Vec<_> = (0..arguments.jobs)
            .map(|job| {
                let mut child = Command::new(&program)
                    .args(&forwarded)
                    .args(["--jobs", &arguments.jobs.to_string()])
                    .args(["--job", &job.to_string()])
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("start a weir-sim job");
                let stdout = child.stdout.take().expect("a job's output");
                std::thread::spawn(move || {
                    let mut totals = None;
                    for line in std::io::BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        match Totals::decode(&line) {
                            Some(partial) => totals = Some(partial),
                            None => println!("{line}"),
                        }
                    }
                    let status = child.wait().expect("a weir-sim job ends");
                    (job, status, totals)
                })
            })
            .collect();
        let mut totals = Totals::default();
        for reader in readers {
            let (job, status, partial) = reader.join().expect("a job's reader");
            match partial {
                Some(partial) if status.success() => totals.merge(partial),
                _ => {
                    eprintln!("weir-sim: job {job} failed ({status}) before reporting its totals");
                    std::process::exit(1);
                }
            }
        }
        totals.failed.sort_unstable();
        totals.nondeterministic.sort_unstable();
        totals
    }

    /// The command line without `--jobs N` (each job gets its own).
    fn without_jobs() -> Vec<String> {
        let mut kept = Vec::new();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--jobs" {
                args.next();
            } else {
                kept.push(arg);
            }
        }
        kept
    }

    fn report(arguments: &Arguments, totals: &Totals, seconds: f64) {
        let simulated = totals.simulated.as_secs_f64();
        println!(
            "weir-sim: {} seeds, {:.0} s simulated in {:.1} s ({:.0} simulated s per wall s, {:.0} seeds/min{}), {} operations, faults {:?}, violations in {} seeds{}",
            totals.ran,
            simulated,
            seconds,
            simulated / seconds.max(1e-9),
            totals.ran as f64 * 60.0 / seconds.max(1e-9),
            if arguments.jobs > 1 && arguments.one.is_none() && !arguments.stop_at_first {
                format!(", {} processes", arguments.jobs)
            } else {
                String::new()
            },
            totals.operations,
            totals.faults,
            totals.failed.len(),
            if arguments.determinism {
                format!(", nondeterministic seeds {:?}", totals.nondeterministic)
            } else {
                String::new()
            }
        );
        println!(
            "sometimes (seeds that reached each path): {:?}",
            totals.coverage
        );
        println!("the nodes' events (seeds whose nodes logged each):");
        for (name, seeds) in &totals.events {
            println!("  {seeds:>6}  {name}");
        }
        // The coverage floors are the single-node runs', the event floors
        // the cluster runs'.
        let reached: BTreeMap<&str, u64> = totals
            .coverage
            .iter()
            .map(|(path, n)| (path.as_str(), *n))
            .collect();
        let events: BTreeMap<&str, u64> = totals
            .events
            .iter()
            .map(|(name, n)| (name.as_str(), *n))
            .collect();
        let below = if arguments.cluster {
            cluster_events_below_floors(&events, totals.ran)
        } else {
            below_floors(&reached, totals.ran)
        };
        for path in &below {
            println!("COVERAGE below its floor: {path}");
        }
        if !totals.failed.is_empty() || !totals.nondeterministic.is_empty() || !below.is_empty() {
            std::process::exit(1);
        }
    }

    /// Runs one seed.
    type Runner = fn(u64) -> SeedReport;

    /// Runs one seed; a panic anywhere in it (a node's assertion, raft-rs's
    /// own) is that seed's violation, reported with the seed and the
    /// command that replays it like any other, and the next seed runs.
    fn guarded(run: Runner, seed: u64) -> SeedReport {
        match std::panic::catch_unwind(|| run(seed)) {
            Ok(report) => report,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|text| text.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                panicked(seed, message)
            }
        }
    }

    fn panicked(seed: u64, message: String) -> SeedReport {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&message, &mut hasher);
        SeedReport {
            seed,
            simulated: Duration::ZERO,
            operations: 0,
            faults: BTreeMap::new(),
            coverage: BTreeMap::new(),
            events: BTreeMap::new(),
            violations: vec![weir_sim::check::Violation {
                invariant: "nothing panics",
                evidence: format!("{message} (where: the panic message above)"),
            }],
            trace: Vec::new(),
            fingerprint: std::hash::Hasher::finish(&hasher),
        }
    }

    fn print_violations(report: &SeedReport, cluster: bool) {
        println!("VIOLATION in seed {}:", report.seed);
        for violation in &report.violations {
            println!("  {violation}");
        }
        let kind = if cluster { " --cluster" } else { "" };
        println!("  reproduce: cargo xtask sim{kind} --seed {}", report.seed);
    }
}
