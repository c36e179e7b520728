//! The seed runner: `weir-sim [--seeds N] [--from S] [--seed S]
//! [--check-determinism] [--stop-at-first]`.
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
    use std::time::{Duration, Instant};

    use weir_sim::cluster::{run_cluster_seed, run_cluster_seed_checked};
    use weir_sim::coverage::below_floors;
    use weir_sim::harness::{run_seed, run_seed_checked, SeedReport};

    struct Arguments {
        from: u64,
        seeds: u64,
        one: Option<u64>,
        determinism: bool,
        stop_at_first: bool,
        cluster: bool,
    }

    fn arguments() -> Result<Arguments, String> {
        let mut parsed = Arguments {
            from: 0,
            seeds: 100,
            one: None,
            determinism: false,
            stop_at_first: false,
            cluster: false,
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
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(parsed)
    }

    pub fn main() {
        // WEIR_SIM_TRACE=debug (or info, trace): the nodes' own logs, for
        // looking into one seed.
        if let Some(level) = std::env::var("WEIR_SIM_TRACE")
            .ok()
            .and_then(|level| level.parse::<tracing::Level>().ok())
        {
            tracing_subscriber::fmt()
                .with_max_level(level)
                .with_writer(std::io::stderr)
                .init();
        }
        let arguments = match arguments() {
            Ok(arguments) => arguments,
            Err(error) => {
                eprintln!("weir-sim: {error}");
                std::process::exit(2);
            }
        };
        let seeds: Vec<u64> = match arguments.one {
            Some(seed) => vec![seed],
            None => (arguments.from..arguments.from + arguments.seeds).collect(),
        };
        let wall = Instant::now();
        let mut simulated = Duration::ZERO;
        let mut operations = 0;
        let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut coverage: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut failed = Vec::new();
        let mut nondeterministic = Vec::new();
        let mut ran = 0;
        for &seed in &seeds {
            ran += 1;
            let (run, checked): (Runner, Runner) = if arguments.cluster {
                (run_cluster_seed, run_cluster_seed_checked)
            } else {
                (run_seed, run_seed_checked)
            };
            let report = if arguments.determinism {
                let first = checked(seed);
                let second = run(seed);
                if first.fingerprint != second.fingerprint {
                    nondeterministic.push(seed);
                }
                first
            } else {
                run(seed)
            };
            if arguments.one.is_some() {
                for line in &report.trace {
                    println!("{line}");
                }
            }
            simulated += report.simulated;
            operations += report.operations;
            for (kind, n) in &report.faults {
                *faults.entry(kind).or_default() += n;
            }
            for (path, n) in &report.coverage {
                if *n > 0 {
                    *coverage.entry(path).or_default() += 1;
                }
            }
            if !report.violations.is_empty() {
                print_violations(&report, arguments.cluster);
                failed.push(seed);
                if arguments.stop_at_first {
                    break;
                }
            }
        }
        let seconds = wall.elapsed().as_secs_f64();
        println!(
            "weir-sim: {} seeds, {:.0} s simulated in {:.1} s ({:.0} simulated s per wall s, {:.0} seeds/min), {} operations, faults {:?}, violations in {} seeds{}",
            seeds.len(),
            simulated.as_secs_f64(),
            seconds,
            simulated.as_secs_f64() / seconds.max(1e-9),
            seeds.len() as f64 * 60.0 / seconds.max(1e-9),
            operations,
            faults,
            failed.len(),
            if arguments.determinism {
                format!(", nondeterministic seeds {nondeterministic:?}")
            } else {
                String::new()
            }
        );
        println!("sometimes (seeds that reached each path): {coverage:?}");
        // The coverage floors are the single-node runs'.
        let below = if arguments.cluster {
            Vec::new()
        } else {
            below_floors(&coverage, ran)
        };
        for path in &below {
            println!("COVERAGE below its floor: {path}");
        }
        if !failed.is_empty() || !nondeterministic.is_empty() || !below.is_empty() {
            std::process::exit(1);
        }
    }

    /// Runs one seed.
    type Runner = fn(u64) -> SeedReport;

    fn print_violations(report: &SeedReport, cluster: bool) {
        println!("VIOLATION in seed {}:", report.seed);
        for violation in &report.violations {
            println!("  {violation}");
        }
        let kind = if cluster { " --cluster" } else { "" };
        println!("  reproduce: cargo xtask sim{kind} --seed {}", report.seed);
    }
}
