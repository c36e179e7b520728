//! The transport between nodes, on (madsim-)tokio: one TCP connection per
//! pair of nodes, which the node with the lower id dials, carrying frames
//! of the wire codec (`codec.rs`) both ways.
//!
//! A connection starts with a hello each way (`"WRH1"` and the sender's
//! node id), so that a node never takes one peer for another; the
//! acceptor refuses an unknown id or one that should not dial it. A frame
//! that does not decode closes its connection, with the reason logged;
//! the dialer reconnects. Frames queued for a peer whose connection is
//! down, or beyond the queue's bound, are dropped: Raft retries.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::codec::{decode_frame, encode_frame, Envelope, Limits};

const HELLO_MAGIC: [u8; 4] = *b"WRH1";
const HELLO_BYTES: usize = 12;
/// Frames queued per peer before new ones are dropped.
const QUEUE_FRAMES: usize = 1024;
/// Wait between attempts to dial a peer.
const REDIAL: Duration = Duration::from_millis(100);
/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What arrived from a peer: its node id and the messages of one frame.
pub type Inbound = (u64, Vec<Envelope>);

/// The sending side of the transport, shared by whoever sends.
#[derive(Clone, Debug)]
pub struct Transport {
    node: u64,
    queues: Arc<BTreeMap<u64, mpsc::Sender<Vec<u8>>>>,
    /// The listener's and the links' tasks, stopped by [`Transport::stop`].
    tasks: Arc<Vec<AbortHandle>>,
}

impl Transport {
    /// Starts the transport of node `node`: accepts on `listener`, dials
    /// the peers of higher id at their `addresses`, and hands every
    /// decoded frame to `inbound`.
    pub fn start(
        node: u64,
        listener: TcpListener,
        addresses: &BTreeMap<u64, SocketAddr>,
        inbound: mpsc::Sender<Inbound>,
        limits: Limits,
    ) -> Self {
        let mut queues = BTreeMap::new();
        let mut accepted = BTreeMap::new();
        let mut tasks = Vec::new();
        for (&peer, &address) in addresses.iter().filter(|(peer, _)| **peer != node) {
            let (frames_tx, frames_rx) = mpsc::channel(QUEUE_FRAMES);
            queues.insert(peer, frames_tx);
            let link = Link {
                node,
                peer,
                frames: frames_rx,
                inbound: inbound.clone(),
                limits,
            };
            let task = if node < peer {
                tokio::spawn(link.dial(address))
            } else {
                let (streams_tx, streams_rx) = mpsc::channel(4);
                accepted.insert(peer, streams_tx);
                tokio::spawn(link.accept(streams_rx))
            };
            tasks.push(task.abort_handle());
        }
        tasks.push(tokio::spawn(listen(node, listener, accepted)).abort_handle());
        Self {
            node,
            queues: Arc::new(queues),
            tasks: Arc::new(tasks),
        }
    }

    /// Closes the listener and every connection (a node that stops).
    pub fn stop(&self) {
        for task in self.tasks.iter() {
            task.abort();
        }
    }

    /// This node's id.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// Queues `envelopes` for `peer` as one frame; dropped if the peer is
    /// unknown or its queue is full.
    pub fn send(&self, peer: u64, envelopes: &[Envelope]) {
        let Some(queue) = self.queues.get(&peer) else {
            tracing::warn!(peer, "raft messages for an unknown node dropped");
            return;
        };
        let mut frame = Vec::new();
        encode_frame(envelopes, &mut frame);
        if queue.try_send(frame).is_err() {
            tracing::debug!(
                peer,
                "raft frame dropped: the peer's queue is full or closed"
            );
        }
    }
}

/// Accepts connections, reads their hello and hands each to its link.
async fn listen(node: u64, listener: TcpListener, links: BTreeMap<u64, mpsc::Sender<TcpStream>>) {
    let links = Arc::new(links);
    loop {
        let (stream, address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a cluster connection failed");
                tokio::time::sleep(REDIAL).await;
                continue;
            }
        };
        let links = Arc::clone(&links);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match greet(stream, node).await {
                Ok((peer, stream)) => match links.get(&peer) {
                    Some(link) => {
                        let _ = link.send(stream).await;
                    }
                    None => {
                        tracing::warn!(peer, %address, "cluster connection refused: not a node that dials this one")
                    }
                },
                Err(error) => tracing::warn!(%error, %address, "cluster connection refused"),
            }
        });
    }
}

/// Exchanges hellos: sends this node's, returns the peer's id.
async fn greet(mut stream: TcpStream, node: u64) -> std::io::Result<(u64, TcpStream)> {
    let mut hello = [0u8; HELLO_BYTES];
    hello[..4].copy_from_slice(&HELLO_MAGIC);
    hello[4..].copy_from_slice(&node.to_le_bytes());
    stream.write_all(&hello).await?;
    // madsim's streams send on flush only; tokio's flush is free.
    stream.flush().await?;
    let mut theirs = [0u8; HELLO_BYTES];
    tokio::time::timeout(HELLO_TIMEOUT, stream.read_exact(&mut theirs))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no hello"))??;
    if theirs[..4] != HELLO_MAGIC {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a weir cluster connection",
        ));
    }
    let peer = u64::from_le_bytes(theirs[4..].try_into().expect("eight bytes"));
    Ok((peer, stream))
}

/// One peer: its queue of frames and the connection that carries them.
struct Link {
    node: u64,
    peer: u64,
    frames: mpsc::Receiver<Vec<u8>>,
    inbound: mpsc::Sender<Inbound>,
    limits: Limits,
}

impl Link {
    /// Dials the peer, again whenever the connection ends.
    async fn dial(mut self, address: SocketAddr) {
        loop {
            match self.connect(address).await {
                Ok(stream) => {
                    self.carry(stream, None).await;
                }
                Err(error) => tracing::debug!(peer = self.peer, %error, "dialing a node failed"),
            }
            self.drain();
            tokio::time::sleep(REDIAL).await;
        }
    }

    async fn connect(&self, address: SocketAddr) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect(address).await?;
        let _ = stream.set_nodelay(true);
        let (peer, stream) = greet(stream, self.node).await?;
        if peer != self.peer {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("node {peer} answered at the address of node {}", self.peer),
            ));
        }
        Ok(stream)
    }

    /// Carries the connections the listener hands over; a newer one
    /// replaces the current (the peer restarted, or the old connection is
    /// dead without this side knowing).
    async fn accept(mut self, mut streams: mpsc::Receiver<TcpStream>) {
        let mut next = streams.recv().await;
        while let Some(stream) = next {
            next = match self.carry(stream, Some(&mut streams)).await {
                Some(replacement) => Some(replacement),
                None => {
                    self.drain();
                    streams.recv().await
                }
            };
        }
    }

    /// Frames queued while no connection was up are stale: drop them.
    fn drain(&mut self) {
        while self.frames.try_recv().is_ok() {}
    }

    /// Writes queued frames to the connection and reads the peer's frames
    /// from it, until either side fails or a newer connection from the
    /// peer arrives (returned).
    async fn carry(
        &mut self,
        stream: TcpStream,
        mut replacements: Option<&mut mpsc::Receiver<TcpStream>>,
    ) -> Option<TcpStream> {
        let (reader, mut writer) = tokio::io::split(stream);
        let mut reading = AbortOnDrop(tokio::spawn(read_frames(
            reader,
            self.peer,
            self.inbound.clone(),
            self.limits,
        )));
        let replaced = loop {
            let newer = async {
                match replacements.as_mut() {
                    Some(streams) => streams.recv().await,
                    None => std::future::pending().await,
                }
            };
            // `biased`: a fixed polling order, the same on every run (the
            // simulator cannot reseed tokio's random one).
            tokio::select! {
                biased;
                _ = &mut reading.0 => break None,
                stream = newer => break stream,
                frame = self.frames.recv() => {
                    let Some(frame) = frame else { break None };
                    if write_frames(&mut writer, frame, &mut self.frames).await.is_err() {
                        break None;
                    }
                }
            }
        };
        tracing::debug!(
            peer = self.peer,
            replaced = replaced.is_some(),
            "cluster connection closed"
        );
        replaced
    }
}

/// A task aborted when its handle is dropped: a connection's reader goes
/// with its link, whether the link ends or is aborted.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes `first` and whatever else is queued, in one write.
async fn write_frames(
    writer: &mut WriteHalf<TcpStream>,
    mut first: Vec<u8>,
    frames: &mut mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    while first.len() < (1 << 20) {
        match frames.try_recv() {
            Ok(next) => first.extend_from_slice(&next),
            Err(_) => break,
        }
    }
    writer.write_all(&first).await?;
    writer.flush().await
}

/// Reads frames until the connection ends or a frame does not decode.
async fn read_frames(
    mut reader: ReadHalf<TcpStream>,
    peer: u64,
    inbound: mpsc::Sender<Inbound>,
    limits: Limits,
) {
    let mut buffer: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        loop {
            match decode_frame(&buffer, &limits) {
                Ok(Some((envelopes, used))) => {
                    buffer.drain(..used);
                    if inbound.send((peer, envelopes)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(peer, %error, "closing a cluster connection: bad frame");
                    return;
                }
            }
        }
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}
