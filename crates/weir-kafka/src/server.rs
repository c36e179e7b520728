//! The Kafka listener and the front-end's timer.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::node::{off_loop, Kafka};
use crate::shutdown::Shutdown;

/// How often the coordinator's timeouts and the logs' interval flushes are
/// checked.
pub const TICK: Duration = Duration::from_millis(100);

/// Accepts Kafka clients until `shutdown` is requested; one task per
/// connection.
pub async fn serve(kafka: Arc<Kafka>, listener: TcpListener, shutdown: Shutdown) {
    let timer = tokio::spawn(run_timer(Arc::clone(&kafka), shutdown.clone()));
    loop {
        tokio::select! {
            biased;
            () = shutdown.requested() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let kafka = Arc::clone(&kafka);
                    tokio::spawn(async move {
                        crate::connection::serve(kafka, stream, peer.to_string()).await;
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "accepting a Kafka connection failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    // The timer stops between two ticks (never in the middle of a flush or
    // of retention), and is waited for: once this returns, the logs can be
    // closed without a tick racing the close.
    let _ = timer.await;
    tracing::info!("Kafka listener closed");
}

/// Expires group members and rebalances, flushes logs whose interval is
/// due, applies retention every `retention_check_interval_ms` (a minute
/// by default).
async fn run_timer(kafka: Arc<Kafka>, shutdown: Shutdown) {
    let mut last_retention = kafka.clock.now_ms();
    loop {
        tokio::select! {
            biased;
            () = shutdown.requested() => break,
            () = tokio::time::sleep(TICK) => {}
        }
        kafka.coordinator.tick();
        let now = kafka.clock.now_ms();
        let interval = kafka.settings.retention_check_interval_ms;
        let retention_due = now.saturating_sub(last_retention) >= interval;
        if retention_due {
            last_retention = now;
        }
        let log = Arc::clone(&kafka.log);
        let work = off_loop(move || {
            if let Err(error) = log.tick() {
                tracing::error!(%error, "flushing the log failed");
            }
            if retention_due {
                match log.apply_retention() {
                    Ok(reports) => {
                        for (topic, partition, report) in reports {
                            tracing::info!(
                                topic,
                                partition,
                                segments = report.segments_deleted.len(),
                                "retention deleted segments"
                            );
                        }
                    }
                    Err(error) => tracing::error!(%error, "applying retention failed"),
                }
            }
        });
        let _ = work.await;
        // An interval flush moves the high watermark of `always` logs
        // only through produce; of `interval` logs never: records are
        // readable at once. Waiting fetches need no wake-up here.
    }
}
