//! The simulated network: where the nodes are, connections with timeouts,
//! pipelines, and the link faults the nemesis injects.

use std::net::SocketAddr;
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::NodeHandle;
use madsim::time::{sleep, timeout};
use tokio::net::TcpStream;

use super::SharedRef;
use crate::client::{Client, Value};
use crate::model::Command;

pub(crate) const SERVER_IP: [u8; 4] = [10, 0, 0, 1];
pub(crate) const CLIENT_IP: [u8; 4] = [10, 0, 0, 2];
pub(crate) const LOG_IP: [u8; 4] = [10, 0, 0, 3];
pub(crate) const PORT: u16 = 6379;
/// How long a client waits for a reply before it gives up on the
/// connection.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The stream node's RESP address.
pub(crate) fn server_address() -> SocketAddr {
    SocketAddr::from((SERVER_IP, PORT))
}

pub(crate) async fn connect(address: SocketAddr) -> Option<Client<TcpStream>> {
    match timeout(REQUEST_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => Some(Client::new(stream)),
        _ => None,
    }
}

/// Sends one request with a timeout; `None` when it failed (the
/// connection must then be dropped: its reply may still arrive).
pub(crate) async fn request(
    client: &mut Client<TcpStream>,
    shared: &SharedRef,
    args: &[&str],
) -> Option<Value> {
    shared.lock().expect("shared").operations += 1;
    match timeout(REQUEST_TIMEOUT, client.call(args)).await {
        Ok(Ok(value)) => Some(value),
        _ => None,
    }
}

/// Sends `requests` as a pipeline (in two writes a moment apart when
/// `split`, so that the server reads the batch in two parts) and reads
/// their replies in order. Returns the replies that came back; fewer than
/// the requests when the connection failed or timed out (it must then be
/// dropped).
pub(crate) async fn pipeline(
    client: &mut Client<TcpStream>,
    shared: &SharedRef,
    requests: &[Command],
    split: bool,
) -> Vec<Value> {
    shared.lock().expect("shared").operations += requests.len() as u64;
    let half = if split {
        requests.len() / 2
    } else {
        requests.len()
    };
    let sent = async {
        client.send(&requests[..half]).await?;
        if half < requests.len() {
            sleep(Duration::from_millis(1)).await;
            client.send(&requests[half..]).await?;
        }
        Ok::<(), std::io::Error>(())
    };
    if !matches!(timeout(REQUEST_TIMEOUT, sent).await, Ok(Ok(()))) {
        return Vec::new();
    }
    let mut replies = Vec::with_capacity(requests.len());
    while replies.len() < requests.len() {
        match timeout(REQUEST_TIMEOUT, client.read()).await {
            Ok(Ok(value)) => replies.push(value),
            _ => break,
        }
    }
    replies
}

/// Clogs `node`'s links: both ways (0), in (1) or out (2).
pub(crate) fn clog(node: &NodeHandle, direction: usize) {
    let net = NetSim::current();
    match direction {
        0 => net.clog_node(node.id()),
        1 => net.clog_node_in(node.id()),
        _ => net.clog_node_out(node.id()),
    }
}

pub(crate) fn unclog(node: &NodeHandle) {
    NetSim::current().unclog_node(node.id());
}

/// Sets packet loss and the latency range of every link.
pub(crate) fn set_links(loss: f64, latency_ms: std::ops::Range<u64>) {
    NetSim::current().update_config(|config| {
        config.packet_loss_rate = loss;
        config.send_latency =
            Duration::from_millis(latency_ms.start)..Duration::from_millis(latency_ms.end);
    });
}
