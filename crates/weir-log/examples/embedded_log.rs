//! Embedding weir's log in another program: open a data directory, create a
//! topic, append, read back, commit a consumer offset.
//!
//! `cargo run --release -p weir-log --example embedded_log -- [DATA_DIR] [MESSAGE...]`
//!
//! Run it twice: the second run finds the topic, the records and the
//! committed offset that the first one left, and continues after them.

use std::sync::Arc;

use weir_io::{OsStorage, SystemClock};
use weir_log::{Broker, BrokerConfig, Record, TopicConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut arguments = std::env::args().skip(1);
    let data_directory = arguments.next().unwrap_or_else(|| "weir-data".into());
    let messages: Vec<String> = arguments.collect();
    let messages = if messages.is_empty() {
        vec!["hello".to_string(), "from".to_string(), "weir".to_string()]
    } else {
        messages
    };

    let storage = Arc::new(OsStorage::open(&data_directory)?);
    let (broker, recovery) = Broker::open(storage, Arc::new(SystemClock), BrokerConfig::default())?;
    println!(
        "opened {data_directory}: {} partition(s) recovered, {} committed offset(s)",
        recovery.partitions.len(),
        recovery.offsets.live_offsets
    );
    if broker.topic("greetings").is_err() {
        broker.create_topic("greetings", TopicConfig::with_partitions(1))?;
        println!("created topic greetings");
    }

    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let records: Vec<Record<'_>> = messages
        .iter()
        .map(|message| Record::value(now, message.as_bytes()))
        .collect();
    // With the default flush policy the records are on disk when this returns.
    let appended = broker.append("greetings", 0, &records)?;
    println!(
        "appended offsets {}..={}",
        appended.base_offset, appended.last_offset
    );

    // Consume from where the group left off.
    let group = "example-consumer";
    let mut next = broker
        .committed_offset(group, "greetings", 0)?
        .map_or(0, |committed| committed.offset);
    let high_watermark = broker.partition("greetings", 0)?.high_watermark();
    while next < high_watermark {
        let read = broker.read("greetings", 0, next, 1 << 20)?;
        for record in read.records() {
            let record = record?;
            let value = record
                .value
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            println!("offset {}: {value}", record.offset);
        }
        next = read.info.next_offset;
    }
    broker.commit_offset(group, "greetings", 0, next, "")?;
    println!("committed offset {next} for group {group}");
    broker.close()?;
    Ok(())
}
