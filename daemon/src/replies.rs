//! Where a connection's replies go: the piece shared by the socket's reader and writer
//! ([`crate::server`]) and by the operations that answer ([`crate::handlers`], the store's
//! reply callbacks), so that neither side reaches into the other.
//!
//! [`Replies`] bounds a connection: at most `MAX_IN_FLIGHT` replies outstanding and
//! `max_unread_bytes` of reply bytes, each reply holding a [`Room`] until it is written.

use std::sync::Arc;

use corral_proto::{ErrorBody, ErrorCode, MAX_REPLY_BYTES, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Most replies a connection may have outstanding (queued or not yet produced). Past
/// it, corrald stops reading the connection's requests until the client reads replies,
/// so a client that pipelines without reading cannot grow corrald's memory.
const MAX_IN_FLIGHT: usize = 1024;

/// Bytes reserved for a reply whose size is not known before it is produced; a larger
/// reply takes the rest when it is sent.
pub const SMALL_REPLY: usize = 512;

/// Room for one reply: a place among the replies in flight and bytes of the unread budget.
pub struct Room {
    _slot: OwnedSemaphorePermit,
    bytes: OwnedSemaphorePermit,
}

/// A reply on its way to the writer, holding its room until written.
pub(crate) struct Outgoing {
    pub(crate) frame: Vec<u8>,
    _room: Room,
}

/// Where a handler sends its replies; cheap to clone into spawned tasks and into the
/// store task (sending never blocks).
#[derive(Clone)]
pub struct Replies {
    tx: mpsc::UnboundedSender<Outgoing>,
    slots: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    budget: usize,
    /// Held by every clone: more than one means a request is still being answered.
    users: Arc<()>,
    /// Cancelled when the connection is being dropped (its writer ended).
    dropped: CancellationToken,
    shutdown: CancellationToken,
}

impl Replies {
    /// The replies of one connection, whose writer task reads `tx`'s other end; at most
    /// `budget` bytes of them unread. `dropped` is cancelled when the connection is
    /// dropped, `shutdown` when corrald closes every connection.
    pub(crate) fn new(
        tx: mpsc::UnboundedSender<Outgoing>,
        budget: usize,
        dropped: CancellationToken,
        shutdown: CancellationToken,
    ) -> Replies {
        Replies {
            tx,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            bytes: Arc::new(Semaphore::new(budget)),
            budget,
            users: Arc::new(()),
            dropped,
            shutdown,
        }
    }

    /// Queues a reply, waiting first while the connection has too much outstanding.
    /// Returns false once the client is gone.
    pub async fn send(&self, response: Response) -> bool {
        self.send_frame(response.id, response.to_frame()).await
    }

    /// [`Replies::send`] for a reply already serialized ([`corral_proto::ok_frame`] and
    /// its siblings) to the request `id`.
    pub async fn send_frame(&self, id: u64, frame: Vec<u8>) -> bool {
        let frame = bounded_frame(id, frame);
        match self.room(frame.len()).await {
            Some(room) => self.push(frame, room),
            None => false,
        }
    }

    /// Reserves room for one reply of up to `bytes` bytes, waiting while the connection
    /// has `MAX_IN_FLIGHT` replies outstanding or its unread budget is spent.
    pub async fn room(&self, bytes: usize) -> Option<Room> {
        let wanted = u32::try_from(bytes.clamp(1, self.budget)).unwrap_or(u32::MAX);
        let reserve = async {
            let slot = self.slots.clone().acquire_owned().await.ok()?;
            let bytes = self.bytes.clone().acquire_many_owned(wanted).await.ok()?;
            Some(Room { _slot: slot, bytes })
        };
        tokio::select! {
            room = reserve => room,
            () = self.dropped.cancelled() => None,
        }
    }

    /// Queues a reply (a frame, to the request `id`) for which room was reserved. Never blocks. A reply larger than
    /// its room takes more of the budget; if the budget has no more, the client is not
    /// reading and the connection is dropped.
    pub fn send_with(&self, id: u64, frame: Vec<u8>, room: Room) -> bool {
        let frame = bounded_frame(id, frame);
        match self.fit(room, frame.len()) {
            Some(room) => self.push(frame, room),
            None => {
                tracing::warn!(
                    "dropping a control connection: its client left more than {} bytes of replies unread (max_unread_bytes)",
                    self.budget
                );
                self.dropped.cancel();
                false
            }
        }
    }

    /// Makes `room` hold exactly `len` bytes of the budget (as far as the budget allows).
    fn fit(&self, mut room: Room, len: usize) -> Option<Room> {
        let held = room.bytes.num_permits();
        let len = len.clamp(1, self.budget);
        if len > held {
            let extra = u32::try_from(len - held).ok()?;
            let more = self.bytes.clone().try_acquire_many_owned(extra).ok()?;
            room.bytes.merge(more);
        } else if len < held {
            drop(room.bytes.split(held - len));
        }
        Some(room)
    }

    fn push(&self, frame: Vec<u8>, room: Room) -> bool {
        self.tx.send(Outgoing { frame, _room: room }).is_ok()
    }

    /// Whether nothing is outstanding: no reply queued or being produced, no task or
    /// waiter holding a clone.
    pub(crate) fn is_idle(&self) -> bool {
        Arc::strong_count(&self.users) == 1 && self.slots.available_permits() == MAX_IN_FLIGHT
    }

    /// Resolves when nobody will read further replies: the client disconnected (the
    /// writer task ended) or corrald is closing connections at the end of shutdown.
    pub async fn closed(&self) {
        tokio::select! {
            () = self.tx.closed() => {}
            () = self.shutdown.cancelled() => {}
        }
    }
}

/// A reply's frame, or a `too_large` error in its place when it passes [`MAX_REPLY_BYTES`].
fn bounded_frame(id: u64, frame: Vec<u8>) -> Vec<u8> {
    if frame.len() <= MAX_REPLY_BYTES {
        return frame;
    }
    let error = ErrorBody::new(
        ErrorCode::TooLarge,
        format!(
            "the reply would be {} bytes, over the limit of {MAX_REPLY_BYTES} bytes for one reply; ask for less (a slice of an array with offset and length, fewer queue items, fewer log lines)",
            frame.len()
        ),
    );
    corral_proto::err_frame(id, &error)
}
