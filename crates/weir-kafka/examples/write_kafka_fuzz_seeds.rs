//! Writes the seed inputs of every fuzz target to a corpus directory:
//! `cargo run -p weir-kafka --example write_kafka_fuzz_seeds -- fuzz/corpus`
//! (what `cargo xtask fuzz-seed` runs).

fn main() -> std::io::Result<()> {
    let corpus = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".to_string());
    for (target, name, bytes) in weir_kafka::fuzzing::seed_corpus() {
        let directory = std::path::Path::new(&corpus).join(target);
        std::fs::create_dir_all(&directory)?;
        std::fs::write(directory.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}
