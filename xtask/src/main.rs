//! Project automation, run as `cargo xtask <command>`.
//!
//! - `ci`: everything CI runs, in order, stopping at the first failure:
//!   installing the tools tests need (Debian's redis-server, redis-tools
//!   and kcat; the Python clients and tansu in a virtualenv) when they are
//!   missing, a check that every planted-bug patch still applies,
//!   formatting, clippy, the workspace tests with the ignored ones included
//!   (the differential tests against redis-server and tansu, the real-client
//!   tests, the crash tests, the fuzz corpus replay), the loom model checks,
//!   the fuzz targets' build, the benchmarks' build, the API docs, the
//!   library crates packaged as crates.io would get them (`cargo package`,
//!   each built on its own), their tests with the newest compatible
//!   dependencies (`cargo update` in a copy of the tree), and the
//!   simulator (clippy, the CI seed range, the determinism check).
//! - `fuzz <target> [seconds]`: runs one cargo-fuzz target, adding what it
//!   finds to `fuzz/corpus/<target>/`.
//! - `setup`: installs what the tests need (Debian's redis packages, the
//!   Python clients' virtualenv) without running anything.
//! - `fuzz-seed`: writes the seed inputs of every target to the corpus.
//! - `sim [--cluster] [--seeds N] [--from S] | --seed S | --check-determinism
//!   --seeds N`: builds the simulator (`weir-sim`) with `--cfg madsim` in its
//!   own target directory and runs seeds (`--cluster`: clusters of the real
//!   server instead of one node); `--seed S` prints that seed's trace.
//! - `sim --planted [name]`: for each patch in `sim/planted/`, copies the
//!   tree to a scratch directory, plants the bug, and runs the CI seed range
//!   (the cluster seeds for a patch marked `# Simulator: --cluster`) until
//!   the simulator reports a violation, or the test its `# Caught by:` line
//!   names; fails if a bug goes uncaught.
//! - `bench [filter]`: runs the criterion benchmarks, which print their
//!   ratios against a baseline measured in the same run.
//!
//! Builds go to `$CARGO_TARGET_DIR`, or `~/.cache/weir/target` when it is
//! unset, so that a fresh clone reuses the build cache of earlier runs. The
//! loom and fuzz builds, which use other compiler flags, get directories of
//! their own beside it.

#[cfg(test)]
mod code_map;
#[cfg(test)]
mod select_biased;
mod test_output;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

fn main() -> ExitCode {
    let arguments: Vec<String> = env::args().skip(1).collect();
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    let result = match arguments.as_slice() {
        ["ci"] => ci(),
        ["fuzz", target] => fuzz(target, 60),
        ["fuzz", target, seconds] => match seconds.parse() {
            Ok(seconds) => fuzz(target, seconds),
            Err(_) => Err(format!("not a number of seconds: {seconds}")),
        },
        ["fuzz-seed"] => fuzz_seed(),
        ["setup"] => ensure_tools().and_then(|()| ensure_python()).map(|python| {
            eprintln!("tools present; Python clients in {}", python.display());
        }),
        ["sim", "--planted"] => planted(None),
        ["sim", "--planted", name] => planted(Some(name)),
        ["sim", rest @ ..] => sim(rest),
        ["bench"] => bench(None),
        ["bench", filter] => bench(Some(filter)),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str =
    "usage: cargo xtask ci | fuzz <target> [seconds] | fuzz-seed | setup | bench [filter] | sim [--cluster] [--seeds N] [--from S] [--seed S] [--check-determinism]";

/// Seeds the simulator runs in CI (0..SIM_SEEDS), and seeds it runs twice
/// to compare (from 100000).
const SIM_SEEDS: &str = "1000";
const SIM_DETERMINISM_SEEDS: &str = "25";
/// Cluster seeds (`weir-sim --cluster`: three and five nodes of the real
/// server) run in CI, and those run twice to compare (from 100000).
const SIM_CLUSTER_SEEDS: &str = "90";
const SIM_CLUSTER_DETERMINISM_SEEDS: &str = "5";
/// Cluster seeds beyond that range that once found a bug the range did
/// not (docs/SIMULATION.md), run in CI too, one by one.
const SIM_CLUSTER_REGRESSION_SEEDS: [(&str, &str); 6] = [
    ("134", "simulator cluster seed 134"),
    ("142", "simulator cluster seed 142"),
    ("174", "simulator cluster seed 174"),
    ("185", "simulator cluster seed 185"),
    ("225", "simulator cluster seed 225"),
    ("393", "simulator cluster seed 393"),
];

/// The fuzz targets, as named in `fuzz/Cargo.toml`.
const FUZZ_TARGETS: [&str; 14] = [
    "batch_decoding",
    "batch_validation",
    "log_files_decoding",
    "segment_recovery",
    "index_lookup",
    "command_log_decoding",
    "command_log_recovery",
    "resp_request",
    "resp_session",
    "kafka_request",
    "kafka_session",
    "raft_frame",
    "raft_log_file",
    "metadata_record",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Where builds go: `$CARGO_TARGET_DIR`, else a cache outside the clone.
fn target_directory() -> PathBuf {
    if let Some(directory) = env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(directory);
    }
    let home = env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache/weir/target")
}

/// A directory beside the main target directory, for builds with other
/// compiler flags.
fn sibling_target(suffix: &str) -> PathBuf {
    let main = target_directory();
    let name = main.file_name().map_or_else(
        || "target".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    main.with_file_name(format!("{name}-{suffix}"))
}

struct Step<'a> {
    name: &'a str,
    arguments: Vec<&'a str>,
    environment: Vec<(&'a str, String)>,
    target: PathBuf,
    directory: PathBuf,
}

impl<'a> Step<'a> {
    fn cargo(name: &'a str, arguments: &[&'a str]) -> Self {
        Self {
            name,
            arguments: arguments.to_vec(),
            environment: Vec::new(),
            target: target_directory(),
            directory: workspace_root(),
        }
    }

    /// Runs in `directory` instead of the workspace.
    fn in_directory(mut self, directory: PathBuf) -> Self {
        self.directory = directory;
        self
    }

    fn env(mut self, key: &'a str, value: impl Into<String>) -> Self {
        self.environment.push((key, value.into()));
        self
    }

    fn target(mut self, target: PathBuf) -> Self {
        self.target = target;
        self
    }

    fn run(&self) -> Result<f64, String> {
        eprintln!("\n==> {}: cargo {}", self.name, self.arguments.join(" "));
        let started = Instant::now();
        let mut command = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        command
            .args(&self.arguments)
            .current_dir(&self.directory)
            .env("CARGO_TARGET_DIR", &self.target);
        for (key, value) in &self.environment {
            command.env(key, value);
        }
        // Cargo's stdout (test results) is passed on line by line and
        // watched, so that a failure names every failed test.
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| format!("{}: could not start cargo: {error}", self.name))?;
        let mut watch = test_output::Watch::default();
        if let Some(stdout) = child.stdout.take() {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                println!("{line}");
                watch.line(&line);
            }
        }
        let status = child
            .wait()
            .map_err(|error| format!("{}: cargo did not finish: {error}", self.name))?;
        let seconds = started.elapsed().as_secs_f64();
        if status.success() {
            eprintln!("<== {}: ok in {seconds:.1} s", self.name);
            Ok(seconds)
        } else {
            Err(format!(
                "{} failed ({status}) after {seconds:.1} s{}",
                self.name,
                watch.summary()
            ))
        }
    }
}

/// Tools that tests need: the tool, the flag that makes it print its
/// version and exit 0, and the Debian packages that provide it.
const REQUIRED_TOOLS: &[(&str, &str, &[&str])] = &[
    (
        "redis-server",
        "--version",
        &["redis-server", "redis-tools"],
    ),
    ("redis-cli", "--version", &["redis-tools"]),
    ("redis-benchmark", "--version", &["redis-tools"]),
    ("kcat", "-V", &["kcat"]),
];

/// Installs the Debian packages of any required tool that is missing.
fn ensure_tools() -> Result<(), String> {
    let mut packages: Vec<&str> = Vec::new();
    for (tool, version_flag, provided_by) in REQUIRED_TOOLS {
        let present = Command::new(tool)
            .arg(version_flag)
            .output()
            .is_ok_and(|output| output.status.success());
        if !present {
            eprintln!("{tool} is missing; installing {provided_by:?}");
            packages.extend(provided_by.iter());
        }
    }
    if packages.is_empty() {
        return Ok(());
    }
    packages.sort_unstable();
    packages.dedup();
    install_packages(&packages)
}

/// Installs Debian packages (through sudo unless root); runs `apt-get
/// update` only when the first try fails.
fn install_packages(packages: &[&str]) -> Result<(), String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
    let apt = |arguments: &[&str]| -> Result<(), String> {
        let mut command = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        command
            .args(arguments)
            .env("DEBIAN_FRONTEND", "noninteractive");
        let status = command
            .status()
            .map_err(|error| format!("cannot run apt-get: {error}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("apt-get {} failed ({status})", arguments.join(" ")))
        }
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(packages);
    if apt(&install).is_err() {
        apt(&["update"])?;
        apt(&install)?;
    }
    Ok(())
}

fn python_environment() -> PathBuf {
    target_directory().with_file_name("venv")
}

/// Creates the virtualenv and installs `xtask/python-requirements.txt`
/// into it when it is missing or the requirements changed; returns the
/// path of its interpreter.
fn ensure_python() -> Result<PathBuf, String> {
    let venv = python_environment();
    let python = venv.join("bin/python");
    let requirements = workspace_root().join("xtask/python-requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|error| format!("cannot read {}: {error}", requirements.display()))?;
    let stamp = venv.join("weir-requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    let run = |program: &Path, arguments: &[&str]| -> Result<(), String> {
        eprintln!("==> {} {}", program.display(), arguments.join(" "));
        let status = Command::new(program)
            .args(arguments)
            .status()
            .map_err(|error| format!("cannot run {}: {error}", program.display()))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {} failed ({status})",
                program.display(),
                arguments.join(" ")
            ))
        }
    };
    if !python.exists() {
        let venv_text = venv.display().to_string();
        if run(Path::new("python3"), &["-m", "venv", &venv_text]).is_err() {
            // Debian's python3 needs python3-venv for `-m venv`.
            install_packages(&["python3-venv"])?;
            run(Path::new("python3"), &["-m", "venv", &venv_text])?;
        }
    }
    let requirements_text = requirements.display().to_string();
    run(
        &python,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            &requirements_text,
        ],
    )?;
    std::fs::write(&stamp, wanted)
        .map_err(|error| format!("cannot write {}: {error}", stamp.display()))?;
    Ok(python)
}

fn ci() -> Result<(), String> {
    let started = Instant::now();
    eprintln!("target directory: {}", target_directory().display());
    ensure_tools()?;
    let python = ensure_python()?.display().to_string();
    planted_patches_apply()?;
    forget_packaged_libraries()?;
    let newest = newest_copy()?;
    // The simulator's seeds are shared among as many processes as there
    // are cores (each seed runs alone, the same whichever process runs it).
    let jobs = std::thread::available_parallelism()
        .map_or(1, |cores| cores.get())
        .to_string();
    let mut steps = vec![
        Step::cargo("format", &["fmt", "--all", "--", "--check"]),
        Step::cargo(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
        ),
        // Tests that need installed tools are ignored by plain `cargo test`;
        // here they run, and fail if a tool is missing.
        Step::cargo(
            "tests",
            &["test", "--workspace", "--locked", "--", "--include-ignored"],
        )
        .env("WEIR_PYTHON", python.clone()),
        // The loom model checks need `--cfg loom` for every crate, so they
        // build in a directory of their own; release keeps them quick.
        Step::cargo(
            "loom model checks",
            &[
                "test",
                "--locked",
                "--release",
                "-p",
                "weir-log",
                "--test",
                "loom_group_commit",
            ],
        )
        .env("RUSTFLAGS", "--cfg loom")
        .env("LOOM_MAX_PREEMPTIONS", "3")
        .target(sibling_target("loom")),
        Step::cargo(
            "fuzz targets build",
            &[
                "build",
                "--locked",
                "--manifest-path",
                "fuzz/Cargo.toml",
                "--bins",
            ],
        )
        .target(sibling_target("fuzz")),
        // Built with the test profile, whose dependencies the tests step
        // has just compiled: the bench profile would compile the whole
        // tree again (four minutes here) for code CI does not run.
        Step::cargo(
            "benchmarks build",
            &[
                "build",
                "--workspace",
                "--benches",
                "--profile",
                "test",
                "--locked",
            ],
        ),
        Step::cargo("API docs", &["doc", "--workspace", "--no-deps", "--locked"])
            .env("RUSTDOCFLAGS", "-D warnings"),
        // The library crates as crates.io would get them: each packaged
        // crate builds on its own (with its README's examples inside).
        Step::cargo(
            "library packages",
            &[
                "package",
                "--locked",
                "--allow-dirty",
                "-p",
                "weir-io",
                "-p",
                "weir-log",
                "-p",
                "weir-stream",
            ],
        )
        .target(sibling_target("package")),
        // Both engines used by a crate outside the workspace, as another
        // project depends on them: it builds without warnings and runs.
        Step::cargo(
            "embedding example",
            &[
                "run",
                "--locked",
                "--manifest-path",
                "examples/embedding/Cargo.toml",
            ],
        )
        .env("RUSTFLAGS", "-D warnings")
        .target(sibling_target("embedding")),
        // The newest versions the requirements allow, as a crate that
        // depends on weir's libraries may resolve them: `cargo update` in
        // a copy of the tree, then the libraries' tests (all their
        // targets built) with them.
        Step::cargo("newest dependencies: update", &["update"]).in_directory(newest.clone()),
        Step::cargo(
            "newest dependencies: library tests",
            &[
                "test",
                "-p",
                "weir-io",
                "-p",
                "weir-log",
                "-p",
                "weir-stream",
            ],
        )
        .in_directory(newest.clone()),
        // The simulator: its madsim-only code linted, a fixed seed range,
        // and each seed of a smaller range run twice and compared.
        sim_step(
            "simulator clippy",
            &[
                "clippy",
                "--locked",
                "--release",
                "-p",
                "weir-sim",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        sim_run("simulator seeds", &["--seeds", SIM_SEEDS, "--jobs", &jobs]),
        sim_run(
            "simulator determinism",
            &[
                "--check-determinism",
                "--seeds",
                SIM_DETERMINISM_SEEDS,
                "--from",
                "100000",
                "--jobs",
                &jobs,
            ],
        ),
        sim_run(
            "simulator cluster seeds",
            &["--cluster", "--seeds", SIM_CLUSTER_SEEDS, "--jobs", &jobs],
        ),
    ];
    steps.extend(
        SIM_CLUSTER_REGRESSION_SEEDS
            .iter()
            .map(|(seed, name)| sim_run(name, &["--cluster", "--seed", seed])),
    );
    steps.extend([sim_run(
        "simulator cluster determinism",
        &[
            "--cluster",
            "--check-determinism",
            "--seeds",
            SIM_CLUSTER_DETERMINISM_SEEDS,
            "--from",
            "100000",
            "--jobs",
            &jobs,
        ],
    )]);
    let mut timings = Vec::new();
    for step in &steps {
        timings.push((step.name, step.run()?));
    }
    eprintln!("\nci passed in {:.1} s:", started.elapsed().as_secs_f64());
    for (name, seconds) in timings {
        eprintln!("  {name:<36} {seconds:>7.1} s");
    }
    Ok(())
}

fn fuzz(target: &str, seconds: u64) -> Result<(), String> {
    if !FUZZ_TARGETS.contains(&target) {
        return Err(format!(
            "unknown fuzz target {target}; known: {FUZZ_TARGETS:?}"
        ));
    }
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        Step::cargo("install cargo-fuzz", &["install", "cargo-fuzz", "--locked"]).run()?;
    }
    let max_time = format!("-max_total_time={seconds}");
    let corpus = format!("fuzz/corpus/{target}");
    // cargo-fuzz needs nightly-only flags; the toolchain here is stable.
    Step::cargo(
        "fuzz",
        &[
            "fuzz",
            "run",
            "--fuzz-dir",
            "fuzz",
            target,
            &corpus,
            "--",
            &max_time,
        ],
    )
    .env("RUSTC_BOOTSTRAP", "1")
    .target(sibling_target("fuzz-run"))
    .run()
    .map(|_| ())
}

fn fuzz_seed() -> Result<(), String> {
    let corpus = workspace_root().join("fuzz/corpus").display().to_string();
    for (package, example) in [
        ("weir-log", "write_log_fuzz_seeds"),
        ("weir-kafka", "write_kafka_fuzz_seeds"),
        ("weir-stream", "write_stream_fuzz_seeds"),
        ("weir-server", "write_server_fuzz_seeds"),
        ("weir-replication", "write_replication_fuzz_seeds"),
    ] {
        Step::cargo(
            "write seed corpus",
            &[
                "run",
                "--quiet",
                "-p",
                package,
                "--example",
                example,
                "--",
                &corpus,
            ],
        )
        .run()?;
    }
    Ok(())
}

/// The simulator's build: `--cfg madsim`, release, its own directory.
fn sim_step<'a>(name: &'a str, arguments: &[&'a str]) -> Step<'a> {
    Step::cargo(name, arguments)
        .env("RUSTFLAGS", "--cfg madsim")
        .target(sibling_target("madsim"))
}

/// The seed runner, built with `--cfg madsim`, run with `arguments`.
fn sim_run<'a>(name: &'a str, arguments: &[&'a str]) -> Step<'a> {
    let mut command = vec![
        "run",
        "--locked",
        "--release",
        "--quiet",
        "-p",
        "weir-sim",
        "--",
    ];
    command.extend(arguments);
    sim_step(name, &command)
}

/// Builds and runs the seed runner with the given arguments.
fn sim(arguments: &[&str]) -> Result<(), String> {
    sim_run("simulator", arguments).run().map(|_| ())
}

/// Plants each bug of `sim/planted/*.patch` in a scratch copy of the tree
/// and checks that the simulator catches it within the CI seed range.
/// The planted-bug patches, by name.
fn planted_patches(root: &Path) -> Result<Vec<PathBuf>, String> {
    let mut patches: Vec<PathBuf> = std::fs::read_dir(root.join("sim/planted"))
        .map_err(|error| format!("cannot list sim/planted: {error}"))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "patch"))
        .collect();
    patches.sort();
    Ok(patches)
}

/// Fails if a planted-bug patch no longer applies to the tree: a refactor
/// must not retire the simulator's proof unnoticed (`cargo xtask sim
/// --planted` runs them; this only checks that they still apply).
fn planted_patches_apply() -> Result<(), String> {
    eprintln!("\n==> planted-bug patches apply to the tree");
    let root = workspace_root();
    let mut stale = Vec::new();
    for patch in planted_patches(&root)? {
        let applies = Command::new("git")
            .args(["apply", "--check"])
            .arg(&patch)
            .current_dir(&root)
            .stderr(Stdio::null())
            .status()
            .map_err(|error| format!("cannot run git: {error}"))?
            .success();
        if !applies {
            stale.push(patch.display().to_string());
        }
    }
    match stale.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "planted-bug patches that no longer apply (make each again against the tree): {}",
            stale.join(", ")
        )),
    }
}

/// The library crates CI packages.
const LIBRARY_CRATES: [&str; 3] = ["weir-io", "weir-log", "weir-stream"];

/// Removes what earlier `cargo package` runs left of the library crates:
/// Cargo verifies a packaged crate against the others through a temporary
/// registry, unpacks those into `$CARGO_HOME/registry/src` once per
/// version, and builds them once per version: with the version unchanged,
/// a later run would build against the first run's sources and artifacts
/// (it did: weir-log failed to verify against an old weir-io).
fn forget_packaged_libraries() -> Result<(), String> {
    let cargo_home = env::var_os("CARGO_HOME").map_or_else(
        || {
            let home = env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
            home.join(".cargo")
        },
        PathBuf::from,
    );
    // Cargo never rebuilds a registry crate whose version it has built:
    // the packages are verified in a target directory of their own, made
    // afresh each time.
    let _ = std::fs::remove_dir_all(sibling_target("package"));
    let sources = cargo_home.join("registry/src");
    let Ok(registries) = std::fs::read_dir(&sources) else {
        return Ok(());
    };
    for registry in registries.flatten() {
        // crates.io's own sources stay; the temporary registries' go.
        if registry
            .file_name()
            .to_string_lossy()
            .starts_with("index.crates.io")
        {
            continue;
        }
        let Ok(crates) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for unpacked in crates.flatten() {
            let name = unpacked.file_name().to_string_lossy().into_owned();
            if LIBRARY_CRATES
                .iter()
                .any(|library| name.starts_with(&format!("{library}-")))
            {
                std::fs::remove_dir_all(unpacked.path())
                    .map_err(|error| format!("removing {}: {error}", unpacked.path().display()))?;
            }
        }
    }
    Ok(())
}

/// A copy of the tree outside the clone, for the build with the newest
/// compatible dependencies (its own Cargo.lock is updated, not ours).
fn newest_copy() -> Result<PathBuf, String> {
    let root = workspace_root();
    let scratch = sibling_target("newest-source");
    copy_tree(&root, &tree_files(&root)?, &scratch)?;
    Ok(scratch)
}

/// The files of the tree (tracked, and new ones not ignored).
fn tree_files(root: &Path) -> Result<Vec<String>, String> {
    let listed = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output()
        .map_err(|error| format!("cannot run git: {error}"))?;
    Ok(String::from_utf8_lossy(&listed.stdout)
        .split('\0')
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect())
}

/// Copies the tree's files into `scratch`, emptied first.
fn copy_tree(root: &Path, files: &[String], scratch: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(scratch);
    for file in files {
        let from = root.join(file);
        if !from.is_file() {
            continue;
        }
        let to = scratch.join(file);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|error| error.to_string())?;
        }
        std::fs::copy(&from, &to).map_err(|error| format!("copying {file}: {error}"))?;
    }
    Ok(())
}

fn planted(only: Option<&str>) -> Result<(), String> {
    let root = workspace_root();
    let patches = planted_patches(&root)?;
    let files = tree_files(&root)?;
    let mut results = Vec::new();
    let mut missed = 0;
    for patch in &patches {
        let name = patch
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        if only.is_some_and(|only| only != name) {
            continue;
        }
        let scratch = plant(&root, &files, &name, patch)?;
        let text = std::fs::read_to_string(patch).map_err(|error| error.to_string())?;
        let started = Instant::now();
        let caught = match caught_by(&text) {
            Some(test) => {
                eprintln!(
                    "\n==> planted bug {name}: out of the simulator's reach, running `{test}`"
                );
                named_test_fails(&scratch, &test)?.then(|| format!("`{test}` fails"))
            }
            None => {
                let cluster = text
                    .lines()
                    .any(|line| line.trim() == "# Simulator: --cluster");
                let seeds = if cluster {
                    SIM_CLUSTER_SEEDS
                } else {
                    SIM_SEEDS
                };
                eprintln!("\n==> planted bug {name}: running up to {seeds} seeds");
                sim_catches(&scratch, cluster)?
                    .map(|(seed, violation)| format!("seed {seed}: {violation}"))
            }
        };
        match caught {
            Some(how) => {
                eprintln!(
                    "<== {name}: caught in {:.0} s by {how}",
                    started.elapsed().as_secs_f64()
                );
                results.push(format!("{name}: {how}"));
            }
            None => {
                eprintln!("<== {name}: NOT caught");
                results.push(format!("{name}: NOT caught"));
                missed += 1;
            }
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }
    eprintln!("\nplanted bugs:");
    for line in &results {
        eprintln!("  {line}");
    }
    if missed > 0 {
        return Err(format!("{missed} planted bugs were not caught"));
    }
    Ok(())
}

/// Copies the tracked files into a scratch tree and applies the patch.
fn plant(root: &Path, files: &[String], name: &str, patch: &Path) -> Result<PathBuf, String> {
    let scratch = sibling_target("planted").join(name);
    copy_tree(root, files, &scratch)?;
    let applied = Command::new("patch")
        .args(["-p1", "--quiet", "-d"])
        .arg(&scratch)
        .arg("-i")
        .arg(patch)
        .status()
        .map_err(|error| format!("cannot run patch: {error}"))?;
    if !applied.success() {
        return Err(format!("{name}: the patch no longer applies"));
    }
    Ok(scratch)
}

/// The plain test named by a patch's `# Caught by: cargo test ...` line,
/// for bugs out of the simulator's reach (the reason follows in the patch).
fn caught_by(patch: &str) -> Option<String> {
    patch
        .lines()
        .take_while(|line| line.starts_with('#'))
        .find_map(|line| line.strip_prefix("# Caught by: "))
        .map(|test| test.trim().to_string())
}

/// Runs the named `cargo test` command in the scratch tree; whether it
/// failed (the bug was caught). The tests must build first: a planted bug
/// that breaks the build is an error, not a catch.
fn named_test_fails(scratch: &Path, test: &str) -> Result<bool, String> {
    let words: Vec<&str> = test.split_whitespace().collect();
    if words.first() != Some(&"cargo") {
        return Err(format!("`{test}` is not a cargo command"));
    }
    // Cargo's own options go before a `--` (what follows is the test
    // binary's).
    let split = words
        .iter()
        .position(|word| *word == "--")
        .unwrap_or(words.len());
    let run = |extra: &[&str]| {
        Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(&words[1..split])
            .args(extra)
            .args(&words[split..])
            .current_dir(scratch)
            .env("CARGO_TARGET_DIR", sibling_target("planted-tests"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|error| format!("cannot run cargo: {error}"))
    };
    if !run(&["--no-run"])?.success() {
        return Err(format!(
            "`{test} --no-run` failed: the planted bug does not build"
        ));
    }
    Ok(!run(&[])?.success())
}

/// Runs the simulator over the CI seed range in the scratch tree (the
/// cluster seeds for a patch marked `# Simulator: --cluster`), stopping at
/// the first violation: its seed and first line.
fn sim_catches(scratch: &Path, cluster: bool) -> Result<Option<(String, String)>, String> {
    let seeds: &[&str] = if cluster {
        &["--cluster", "--seeds", SIM_CLUSTER_SEEDS, "--stop-at-first"]
    } else {
        &["--seeds", SIM_SEEDS, "--stop-at-first"]
    };
    let caught = sim_catches_with(scratch, seeds)?;
    if caught.is_some() || !cluster {
        return Ok(caught);
    }
    for (seed, _) in SIM_CLUSTER_REGRESSION_SEEDS {
        let caught = sim_catches_with(scratch, &["--cluster", "--seed", seed])?;
        if caught.is_some() {
            return Ok(caught);
        }
    }
    Ok(None)
}

/// Runs the simulator with `seeds` in the scratch tree: the first
/// violation's seed and first line, if any.
fn sim_catches_with(scratch: &Path, seeds: &[&str]) -> Result<Option<(String, String)>, String> {
    let output = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "run",
            "--locked",
            "--release",
            "--quiet",
            "-p",
            "weir-sim",
            "--",
        ])
        .args(seeds)
        .current_dir(scratch)
        .env("RUSTFLAGS", "--cfg madsim")
        .env("CARGO_TARGET_DIR", sibling_target("madsim-planted"))
        .output()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut lines = text.lines();
    let caught = lines
        .by_ref()
        .find_map(|line| line.strip_prefix("VIOLATION in seed "))
        .map(|seed| {
            let first = lines.next().unwrap_or("").trim().to_string();
            (seed.trim_end_matches(':').to_string(), first)
        });
    if caught.is_none() {
        eprint!("{}{text}", String::from_utf8_lossy(&output.stderr));
        if !text.contains("weir-sim: ") {
            return Err("the simulator did not build or run with the planted bug".into());
        }
    }
    Ok(caught)
}

fn bench(filter: Option<&str>) -> Result<(), String> {
    // resp_vs_redis runs the release `weir` binary against redis-server,
    // kafka_load against tansu (from the virtualenv).
    ensure_tools()?;
    ensure_python()?;
    Step::cargo(
        "weir binary",
        &["build", "--release", "-p", "weir-server", "--bin", "weir"],
    )
    .run()?;
    let mut arguments = vec!["bench", "-p", "weir-benches"];
    if let Some(filter) = filter {
        arguments.extend(["--", filter]);
    }
    Step::cargo("benchmarks", &arguments).run().map(|_| ())
}
