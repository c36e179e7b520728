//! The transport between nodes, on (madsim-)tokio: one TCP connection per
//! pair of nodes, which the node with the lower id dials, carrying frames
//! of the wire codec (`codec.rs`) both ways.
//!
//! A connection starts with a hello each way (`"WRH1"` and the sender's
//! node id), so that a node never takes one peer for another; the
//! acceptor refuses an id that should not dial it (a higher one). Peers
//! are added at run time (a node that joined): a node of lower id learns
//! a new node's address from the cluster's metadata, or from the node
//! itself, which tells its peers of lower id where it is (`"WRJ1"`, its
//! id, a u16 length and its address as text) whenever no connection from
//! them is up: a peer that restarts before the metadata has the new node
//! knows it only from that announcement. A frame
//! that does not decode closes its connection, with the reason logged;
//! the dialer reconnects. Frames queued for a peer whose connection is
//! down, or beyond the queue's bound, are dropped: Raft retries.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use weir_io::sync::lock;

use crate::codec::{
    decode_whole_frame, encode_frame_parts, envelope_encoded_len, frame_length, Envelope, Frame,
    Limits, FRAME_HEADER_BYTES,
};

const HELLO_MAGIC: [u8; 4] = *b"WRH1";
/// The hello of a node telling a peer of lower id where it is.
const JOIN_MAGIC: [u8; 4] = *b"WRJ1";
/// How often a node tells a peer of lower id where it is, while that peer
/// has no connection up to it.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
const HELLO_BYTES: usize = 12;
/// Frames queued per peer before new ones are dropped.
const QUEUE_FRAMES: usize = 1024;
/// Wait between attempts to dial a peer.
const REDIAL: Duration = Duration::from_millis(100);
/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the transport hands its owner.
#[derive(Debug)]
pub enum Inbound {
    /// The messages of one frame from node `from`.
    Frame {
        /// The sender.
        from: u64,
        /// Its messages.
        envelopes: Vec<Envelope>,
    },
    /// The connection with node `peer` ended (it closed or failed): the
    /// peer may be gone. A process that crashes has its sockets closed by
    /// its kernel at once, so this comes long before the peer's silence
    /// shows.
    Lost {
        /// The node whose connection ended.
        peer: u64,
    },
}

/// The sending side of the transport, shared by whoever sends.
#[derive(Clone, Debug)]
pub struct Transport {
    shared: Arc<Shared>,
}

/// What the transport's tasks share: the links, added to at run time.
#[derive(Debug)]
struct Shared {
    node: u64,
    inbound: mpsc::Sender<Inbound>,
    limits: Limits,
    /// Each peer's queue of frames.
    queues: Mutex<BTreeMap<u64, mpsc::Sender<Frame>>>,
    /// The links that take connections the peer dials, by peer.
    accepted: Mutex<BTreeMap<u64, mpsc::Sender<TcpStream>>>,
    /// The listener's and the links' tasks, stopped by [`Transport::stop`].
    tasks: Mutex<Vec<AbortHandle>>,
    /// Whether each peer that dials this node has a connection up.
    connected: Mutex<BTreeMap<u64, Arc<AtomicBool>>>,
}

impl Transport {
    /// Starts the transport of node `node`: accepts on `listener`, dials
    /// the peers of higher id at their `addresses`, and hands every
    /// decoded frame to `inbound`. Peers of lower id are told this node's
    /// own address (its entry in `addresses`) whenever they have no
    /// connection up to it: a node that joins a running cluster is not yet
    /// known to them, and one of them that restarts forgets it.
    pub fn start(
        node: u64,
        listener: TcpListener,
        addresses: &BTreeMap<u64, SocketAddr>,
        inbound: mpsc::Sender<Inbound>,
        limits: Limits,
    ) -> Self {
        let transport = Self {
            shared: Arc::new(Shared {
                node,
                inbound,
                limits,
                queues: Mutex::new(BTreeMap::new()),
                accepted: Mutex::new(BTreeMap::new()),
                tasks: Mutex::new(Vec::new()),
                connected: Mutex::new(BTreeMap::new()),
            }),
        };
        for (&peer, &address) in addresses.iter().filter(|(peer, _)| **peer != node) {
            transport.add_peer(peer, Some(address));
            if let (true, Some(own)) = (peer < node, addresses.get(&node)) {
                let announcing =
                    tokio::spawn(announce(Arc::clone(&transport.shared), peer, address, *own));
                lock(&transport.shared.tasks).push(announcing.abort_handle());
            }
        }
        let listening = tokio::spawn(listen(Arc::clone(&transport.shared), listener));
        lock(&transport.shared.tasks).push(listening.abort_handle());
        transport
    }

    /// Adds a link to node `peer` (a node that joined), unless there is
    /// one: dialed at `address` when this node's id is the lower, else
    /// taking the connections the peer dials.
    pub fn add_peer(&self, peer: u64, address: Option<SocketAddr>) {
        let _ = self.shared.add_peer(peer, address);
    }

    /// Closes the listener and every connection (a node that stops).
    pub fn stop(&self) {
        for task in lock(&self.shared.tasks).iter() {
            task.abort();
        }
    }

    /// This node's id.
    pub fn node(&self) -> u64 {
        self.shared.node
    }

    /// Queues `envelopes` for `peer`, in frames of at most a quarter of
    /// the frame limit each (see [`frame_runs`]); dropped if the peer is
    /// unknown, and from the first frame its full queue refuses on.
    pub fn send(&self, peer: u64, envelopes: &[Envelope]) {
        let Some(queue) = lock(&self.shared.queues).get(&peer).cloned() else {
            tracing::warn!(peer, "raft messages for an unknown node dropped");
            return;
        };
        for run in frame_runs(envelopes, &self.shared.limits) {
            let frame = encode_frame_parts(run);
            // The peer decodes with the same limit: a frame past it (one
            // message alone larger) would only close the connection.
            if frame.len() > FRAME_HEADER_BYTES + self.shared.limits.max_frame_bytes as usize {
                tracing::error!(
                    peer,
                    bytes = frame.len(),
                    "a raft message larger than the frame limit: dropped"
                );
                continue;
            }
            if queue.try_send(frame).is_err() {
                tracing::debug!(
                    peer,
                    "raft frame dropped: the peer's queue is full or closed"
                );
                return;
            }
        }
    }
}

impl Shared {
    /// Adds a link to `peer` unless there is one; whether it did.
    fn add_peer(self: &Arc<Self>, peer: u64, address: Option<SocketAddr>) -> bool {
        if peer == self.node {
            return false;
        }
        let mut queues = lock(&self.queues);
        if queues.contains_key(&peer) {
            return false;
        }
        if self.node > peer {
            self.add_accepting(peer, &mut queues);
            return true;
        }
        let Some(address) = address else {
            return false;
        };
        let (frames_tx, frames_rx) = mpsc::channel(QUEUE_FRAMES);
        queues.insert(peer, frames_tx);
        let task = tokio::spawn(self.link(peer, frames_rx).dial(address));
        lock(&self.tasks).push(task.abort_handle());
        true
    }

    fn add_accepting(self: &Arc<Self>, peer: u64, queues: &mut BTreeMap<u64, mpsc::Sender<Frame>>) {
        let (frames_tx, frames_rx) = mpsc::channel(QUEUE_FRAMES);
        queues.insert(peer, frames_tx);
        let (streams_tx, streams_rx) = mpsc::channel(4);
        lock(&self.accepted).insert(peer, streams_tx);
        let connected = Arc::new(AtomicBool::new(false));
        lock(&self.connected).insert(peer, Arc::clone(&connected));
        let task = tokio::spawn(self.link(peer, frames_rx).accept(streams_rx, connected));
        lock(&self.tasks).push(task.abort_handle());
    }

    fn link(&self, peer: u64, frames: mpsc::Receiver<Frame>) -> Link {
        Link {
            node: self.node,
            peer,
            frames,
            inbound: self.inbound.clone(),
            limits: self.limits,
        }
    }

    /// Whether `peer` (of lower id) has a connection up to this node.
    fn connected_from(&self, peer: u64) -> bool {
        lock(&self.connected)
            .get(&peer)
            .is_some_and(|up| up.load(Ordering::Relaxed))
    }
}

/// Tells node `peer` (of lower id, which dials this one) where this node
/// is, every [`ANNOUNCE_EVERY`] while it has no connection up to this
/// one: not only until it first dials, since it may restart before the
/// cluster's metadata lists this node, and then knows it from nowhere else.
async fn announce(shared: Arc<Shared>, peer: u64, address: SocketAddr, own: SocketAddr) {
    loop {
        tokio::time::sleep(ANNOUNCE_EVERY).await;
        if shared.connected_from(peer) {
            continue;
        }
        let told = async {
            let mut stream = TcpStream::connect(address).await?;
            let mut hello = hello(JOIN_MAGIC, shared.node);
            let text = own.to_string();
            hello.extend_from_slice(&(text.len() as u16).to_le_bytes());
            hello.extend_from_slice(text.as_bytes());
            stream.write_all(&hello).await?;
            stream.flush().await?;
            // The peer's own hello: the announcement has arrived before
            // this side closes the connection.
            let mut theirs = [0u8; HELLO_BYTES];
            read_within(&mut stream, &mut theirs).await
        };
        if let Err(error) = told.await {
            tracing::debug!(peer, %error, "telling a node where this one is failed");
        }
    }
}

/// Accepts connections, reads their hello and hands each to its link.
async fn listen(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a cluster connection failed");
                tokio::time::sleep(REDIAL).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match greet(stream, shared.node).await {
                Ok(Greeting::Peer(peer, stream)) => shared.hand_over(peer, stream, address).await,
                Ok(Greeting::Joining(peer, at)) => {
                    if shared.add_peer(peer, Some(at)) {
                        tracing::info!(peer, %at, "a node told where it is");
                    }
                }
                Err(error) => tracing::warn!(%error, %address, "cluster connection refused"),
            }
        });
    }
}

impl Shared {
    /// Hands a connection that `peer` dialed to its link (made for a node
    /// of lower id not known yet).
    async fn hand_over(self: &Arc<Self>, peer: u64, stream: TcpStream, address: SocketAddr) {
        if peer < self.node {
            let _ = self.add_peer(peer, None);
        }
        let link = lock(&self.accepted).get(&peer).cloned();
        match link {
            Some(link) => {
                let _ = link.send(stream).await;
            }
            None => {
                tracing::warn!(peer, %address, "cluster connection refused: not a node that dials this one")
            }
        }
    }
}

fn hello(magic: [u8; 4], node: u64) -> Vec<u8> {
    let mut hello = Vec::with_capacity(HELLO_BYTES);
    hello.extend_from_slice(&magic);
    hello.extend_from_slice(&node.to_le_bytes());
    hello
}

/// What a new connection said.
enum Greeting {
    /// A peer's connection.
    Peer(u64, TcpStream),
    /// A node telling where it is (the connection is done).
    Joining(u64, SocketAddr),
}

/// Exchanges hellos: sends this node's, returns the peer's id.
async fn greet(mut stream: TcpStream, node: u64) -> std::io::Result<Greeting> {
    stream.write_all(&hello(HELLO_MAGIC, node)).await?;
    // madsim's streams send on flush only; tokio's flush is free.
    stream.flush().await?;
    let mut theirs = [0u8; HELLO_BYTES];
    read_within(&mut stream, &mut theirs).await?;
    let peer = u64::from_le_bytes(theirs[4..].try_into().expect("eight bytes"));
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    match <[u8; 4]>::try_from(&theirs[..4]).expect("four bytes") {
        HELLO_MAGIC => Ok(Greeting::Peer(peer, stream)),
        JOIN_MAGIC => {
            let mut length = [0u8; 2];
            read_within(&mut stream, &mut length).await?;
            let mut text = vec![0u8; usize::from(u16::from_le_bytes(length)).min(256)];
            read_within(&mut stream, &mut text).await?;
            let address = std::str::from_utf8(&text)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| invalid("a node told an address that does not parse"))?;
            Ok(Greeting::Joining(peer, address))
        }
        _ => Err(invalid("not a weir cluster connection")),
    }
}

async fn read_within(stream: &mut TcpStream, bytes: &mut [u8]) -> std::io::Result<()> {
    tokio::time::timeout(HELLO_TIMEOUT, stream.read_exact(bytes))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no hello"))??;
    Ok(())
}

/// One peer: its queue of frames and the connection that carries them.
struct Link {
    node: u64,
    peer: u64,
    frames: mpsc::Receiver<Frame>,
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
        let Greeting::Peer(peer, stream) = greet(stream, self.node).await? else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a node answered with a join hello",
            ));
        };
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
    /// dead without this side knowing). `connected` says whether one is up.
    async fn accept(mut self, mut streams: mpsc::Receiver<TcpStream>, connected: Arc<AtomicBool>) {
        let mut next = streams.recv().await;
        while let Some(stream) = next {
            connected.store(true, Ordering::Relaxed);
            next = match self.carry(stream, Some(&mut streams)).await {
                Some(replacement) => Some(replacement),
                None => {
                    connected.store(false, Ordering::Relaxed);
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

/// `envelopes` cut, in order, into runs that each make a frame of about a
/// quarter of `limits.max_frame_bytes` at most (a single envelope larger
/// than that goes alone) and of at most `limits.max_messages` messages.
/// A leader catching a follower up sends up to its in-flight limit of
/// appends of a megabyte each in one turn: sent as one frame, those made
/// 85 MB in cluster seed 142, which the follower refused (the limit is
/// 64 MiB), closing the connection.
pub fn frame_runs<'a>(envelopes: &'a [Envelope], limits: &Limits) -> Vec<&'a [Envelope]> {
    let target = limits.max_frame_bytes as usize / 4;
    let most = (limits.max_messages as usize).max(1);
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, envelope) in envelopes.iter().enumerate() {
        let size = envelope_encoded_len(envelope);
        let full = index - start == most || (bytes + size > target && index > start);
        if full {
            runs.push(&envelopes[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < envelopes.len() {
        runs.push(&envelopes[start..]);
    }
    runs
}

/// A task aborted when its handle is dropped: a connection's reader goes
/// with its link, whether the link ends or is aborted.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bytes of queued frames gathered into one vectored write at most.
const WRITE_BYTES_MAX: usize = 1 << 20;
/// Parts handed to one `writev` at most (Linux takes 1,024).
const WRITE_PARTS_MAX: usize = 256;
/// Room made in the read buffer at least, before each read.
const READ_BYTES_MIN: usize = 64 << 10;

/// Writes `first` and whatever else is queued (up to [`WRITE_BYTES_MAX`]),
/// in vectored writes of their parts: batches are not copied.
async fn write_frames(
    writer: &mut WriteHalf<TcpStream>,
    first: Frame,
    frames: &mut mpsc::Receiver<Frame>,
) -> std::io::Result<()> {
    let mut bytes = first.len();
    let mut parts: Vec<Bytes> = first.parts().to_vec();
    while bytes < WRITE_BYTES_MAX {
        match frames.try_recv() {
            Ok(next) => {
                bytes += next.len();
                parts.extend_from_slice(next.parts());
            }
            Err(_) => break,
        }
    }
    write_parts(writer, &mut parts).await?;
    writer.flush().await
}

/// Writes every part, in order, however the writes split them.
async fn write_parts(
    writer: &mut WriteHalf<TcpStream>,
    parts: &mut [Bytes],
) -> std::io::Result<()> {
    let mut next = 0;
    while next < parts.len() {
        if parts[next].is_empty() {
            next += 1;
            continue;
        }
        let end = parts.len().min(next + WRITE_PARTS_MAX);
        let slices: Vec<std::io::IoSlice<'_>> = parts[next..end]
            .iter()
            .map(|part| std::io::IoSlice::new(part))
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let part = &mut parts[next];
            let step = written.min(part.len());
            part.advance(step);
            written -= step;
            if part.is_empty() {
                next += 1;
            }
        }
    }
    Ok(())
}

/// Reads frames until the connection ends or a frame does not decode. A
/// frame's bytes are read into one buffer, from which its batches are
/// handed on as slices, not copies.
async fn read_frames(
    mut reader: ReadHalf<TcpStream>,
    peer: u64,
    inbound: mpsc::Sender<Inbound>,
    limits: Limits,
) {
    let mut buffer = BytesMut::with_capacity(READ_BYTES_MIN);
    loop {
        let needed = loop {
            let end = match frame_length(&buffer, &limits) {
                Ok(Some(end)) if buffer.len() >= end => end,
                Ok(Some(end)) => break end - buffer.len(),
                Ok(None) => break READ_BYTES_MIN,
                Err(error) => return bad_frame(peer, &error),
            };
            let frame = buffer.split_to(end).freeze();
            match decode_whole_frame(frame, &limits) {
                Ok(envelopes) => {
                    let frame = Inbound::Frame {
                        from: peer,
                        envelopes,
                    };
                    if inbound.send(frame).await.is_err() {
                        return;
                    }
                }
                Err(error) => return bad_frame(peer, &error),
            }
        };
        // Room for the rest of the frame at once (its length is checked
        // against the limit), so that a large frame is not moved as it grows.
        buffer.reserve(needed.max(READ_BYTES_MIN));
        match reader.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = inbound.send(Inbound::Lost { peer }).await;
                return;
            }
            Ok(_) => {}
        }
    }
}

fn bad_frame(peer: u64, error: &crate::codec::CodecError) {
    tracing::warn!(peer, %error, "closing a cluster connection: bad frame");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(data_bytes: usize) -> Envelope {
        let mut message = raft::eraftpb::Message::default();
        message.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
        message.entries = vec![raft::eraftpb::Entry {
            data: vec![0; data_bytes].into(),
            ..raft::eraftpb::Entry::default()
        }]
        .into();
        Envelope { group: 1, message }
    }

    /// The runs, joined, are the envelopes in order; each keeps to the
    /// message count, and to a quarter of the frame limit unless it is one
    /// envelope alone.
    fn check_runs(envelopes: &[Envelope], limits: &Limits) -> Vec<usize> {
        let runs = frame_runs(envelopes, limits);
        let joined: Vec<&Envelope> = runs.iter().flat_map(|run| run.iter()).collect();
        assert!(joined.iter().copied().eq(envelopes.iter()));
        for run in &runs {
            assert!(!run.is_empty() && run.len() <= limits.max_messages as usize);
            let body: usize = run.iter().map(envelope_encoded_len).sum();
            assert!(run.len() == 1 || body <= limits.max_frame_bytes as usize / 4);
        }
        runs.iter().map(|run| run.len()).collect()
    }

    #[test]
    fn runs_keep_to_the_bytes_and_the_message_count() {
        // Appends of 324 bytes encoded: room for 30 by the bytes, three by
        // the count.
        let by_count = Limits {
            max_frame_bytes: 40_000,
            max_messages: 3,
            ..Limits::default()
        };
        let small: Vec<Envelope> = (0..7).map(|_| append(200)).collect();
        assert_eq!(check_runs(&small, &by_count), vec![3, 3, 1]);
        // A quarter of 4,000 bytes holds three of them; an envelope past it
        // goes alone, between runs.
        let by_bytes = Limits {
            max_frame_bytes: 4_000,
            ..Limits::default()
        };
        assert_eq!(check_runs(&small, &by_bytes), vec![3, 3, 1]);
        let mixed = vec![append(200), append(2_000), append(200), append(200)];
        assert_eq!(check_runs(&mixed, &by_bytes), vec![1, 1, 2]);
        let first_alone = vec![append(2_000), append(200)];
        assert_eq!(check_runs(&first_alone, &by_bytes), vec![1, 1]);
        assert!(frame_runs(&[], &by_bytes).is_empty());
    }
}
