//! A stream's state as the commands that rebuild it exactly, for the log
//! rewrite: its entries as XADDs, then replay-only commands that restore
//! what no client command can set as it was (the counters, consumers' times,
//! pending entries whose stream entry was deleted).
//!
//! The `WEIR.*` commands exist only while replaying a log; clients get
//! "unknown command" for them.

use crate::group::Stream;
use crate::id::StreamId;

/// Commands that rebuild the stream at `key`.
pub fn snapshot_stream(key: &[u8], stream: &Stream) -> Vec<Vec<Vec<u8>>> {
    let mut commands = Vec::new();
    for entry in stream.entries.range(StreamId::MIN, StreamId::MAX, false) {
        let mut command = vec![b"XADD".to_vec(), key.to_vec(), entry.id.to_bytes()];
        for (name, value) in entry.fields() {
            command.push(name.to_vec());
            command.push(value.to_vec());
        }
        commands.push(command);
    }
    commands.push(vec![
        b"WEIR.STREAMMETA".to_vec(),
        key.to_vec(),
        stream.last_id.to_bytes(),
        stream.entries_added.to_string().into_bytes(),
        stream.max_deleted_entry_id.to_bytes(),
        stream.first_id.to_bytes(),
    ]);
    for (name, group) in &stream.groups {
        commands.push(vec![
            b"XGROUP".to_vec(),
            b"CREATE".to_vec(),
            key.to_vec(),
            name.clone(),
            group.last_id.to_bytes(),
            b"MKSTREAM".to_vec(),
            b"ENTRIESREAD".to_vec(),
            group.entries_read.to_string().into_bytes(),
        ]);
        for (consumer_name, consumer) in &group.consumers {
            commands.push(vec![
                b"WEIR.CONSUMER".to_vec(),
                key.to_vec(),
                name.clone(),
                consumer_name.to_vec(),
                consumer.seen_time.to_string().into_bytes(),
                consumer
                    .active_time
                    .map_or(-1, |time| time as i64)
                    .to_string()
                    .into_bytes(),
            ]);
        }
        for (id, pending) in &group.pending {
            commands.push(vec![
                b"WEIR.PENDING".to_vec(),
                key.to_vec(),
                name.clone(),
                pending.consumer.to_vec(),
                id.to_bytes(),
                pending.delivery_time.to_string().into_bytes(),
                pending.delivery_count.to_string().into_bytes(),
            ]);
        }
    }
    commands
}
