//! [`Queue`]: a durable FIFO of JSON items.

use std::time::Duration;

use corral_proto::{
    Lease, Op, QueueAckResult, QueueGetResult, QueueInfo, QueuePutResult, RemovedResult,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::timeout_ms;
use crate::{Client, Error};

/// A handle on one named queue, from [`Client::queue`]: like Python's
/// `multiprocessing.Queue`, but shared by every program on the machine and durable
/// across restarts of corrald.
///
/// Items are any JSON values; [`put`](Queue::put) takes anything [`Serialize`] and
/// [`get`](Queue::get) decodes into any [`DeserializeOwned`] type. A queue is created by
/// its first `put` (unbounded) or by [`declare`](Queue::declare).
///
/// ```no_run
/// use corral_client::Client;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Job { id: u64, path: String }
///
/// let client = Client::connect()?;
/// let jobs = client.queue("jobs");
/// jobs.declare(Some(100))?;                      // at most 100 waiting jobs
/// jobs.put(Job { id: 1, path: "/tmp/a".into() })?;
/// let job: Job = jobs.get(None)?;
/// # Ok::<(), corral_client::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Queue<'c> {
    client: &'c Client,
    name: String,
}

impl<'c> Queue<'c> {
    pub(crate) fn new(client: &'c Client, name: String) -> Queue<'c> {
        Queue { client, name }
    }

    /// The queue's name.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// assert_eq!(client.queue("jobs").name(), "jobs");
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends `value`, waiting for room as long as it takes if the queue is full.
    /// Returns the number of items in the queue after this put. The item is durable when
    /// this returns.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let depth = client.queue("jobs").put(serde_json::json!({"id": 7}))?;
    /// println!("{depth} job(s) waiting");
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn put(&self, value: impl Serialize) -> Result<usize, Error> {
        self.put_with(value, None, true)
    }

    /// Like [`put`](Queue::put), but waits for room at most `timeout` (`None`: forever);
    /// then fails with [`ErrorCode::Full`](crate::ErrorCode::Full).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use corral_client::ErrorCode;
    ///
    /// # let client = corral_client::Client::connect()?;
    /// match client.queue("jobs").put_timeout("job", Some(Duration::from_secs(5))) {
    ///     Ok(_) => {}
    ///     Err(e) if e.code() == Some(ErrorCode::Full) => eprintln!("consumers are behind"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn put_timeout(
        &self,
        value: impl Serialize,
        timeout: Option<Duration>,
    ) -> Result<usize, Error> {
        self.put_with(value, timeout, true)
    }

    /// Like [`put`](Queue::put), but fails at once with
    /// [`ErrorCode::Full`](crate::ErrorCode::Full) if the queue is full.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// if client.queue("jobs").try_put("job").is_err() {
    ///     eprintln!("queue full, dropping the job");
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn try_put(&self, value: impl Serialize) -> Result<usize, Error> {
        self.put_with(value, None, false)
    }

    fn put_with(
        &self,
        value: impl Serialize,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<usize, Error> {
        let value = serde_json::to_value(value).map_err(Error::Encode)?;
        let result: QueuePutResult = self.client.call(Op::QueuePut {
            queue: self.name.clone(),
            value,
            timeout_ms: timeout_ms(timeout),
            block,
        })?;
        Ok(result.depth)
    }

    /// Takes the oldest item, waiting for one at most `timeout` (`None`: forever); then
    /// fails with [`ErrorCode::Empty`](crate::ErrorCode::Empty). Deleting the queue wakes
    /// waiting getters with [`ErrorCode::NotFound`](crate::ErrorCode::NotFound).
    ///
    /// The item leaves the queue before it is decoded: if it does not decode as `T`, the
    /// error is [`Error::Decode`], which holds it.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// # let client = corral_client::Client::connect()?;
    /// let item: serde_json::Value = client.queue("jobs").get(Some(Duration::from_secs(30)))?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn get<T: DeserializeOwned>(&self, timeout: Option<Duration>) -> Result<T, Error> {
        self.get_one(timeout, true)
    }

    /// Takes the oldest item, or fails at once with
    /// [`ErrorCode::Empty`](crate::ErrorCode::Empty).
    ///
    /// ```no_run
    /// use corral_client::ErrorCode;
    ///
    /// # let client = corral_client::Client::connect()?;
    /// loop {
    ///     match client.queue("jobs").try_get::<String>() {
    ///         Ok(job) => println!("{job}"),
    ///         Err(e) if e.code() == Some(ErrorCode::Empty) => break,
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn try_get<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.get_one(None, false)
    }

    fn get_one<T: DeserializeOwned>(
        &self,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<T, Error> {
        let mut items = self.take(1, timeout, block)?;
        if items.len() != 1 {
            return Err(Error::Protocol(format!(
                "queue_get with count 1 returned {} items",
                items.len()
            )));
        }
        let item = items.remove(0);
        T::deserialize(&item).map_err(|source| Error::Decode {
            value: item,
            source,
        })
    }

    /// Takes up to `max` items at once, oldest first, waiting for the first one at most
    /// `timeout` (`None`: forever); then fails with
    /// [`ErrorCode::Empty`](crate::ErrorCode::Empty). Never waits for more than one: it
    /// returns as soon as there is something. `max == 0` returns an empty `Vec` without
    /// asking corrald.
    ///
    /// If any item does not decode as `T`, the error is [`Error::Decode`] holding every
    /// item taken, as a JSON array.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// # let client = corral_client::Client::connect()?;
    /// let batch: Vec<u64> = client.queue("ids").get_many(100, Some(Duration::from_secs(1)))?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn get_many<T: DeserializeOwned>(
        &self,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<T>, Error> {
        self.get_many_with(max, timeout, true)
    }

    /// Takes up to `max` items that are there now, oldest first, or fails at once with
    /// [`ErrorCode::Empty`](crate::ErrorCode::Empty). Otherwise like
    /// [`get_many`](Queue::get_many).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let backlog: Vec<serde_json::Value> = client.queue("jobs").try_get_many(1000)?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn try_get_many<T: DeserializeOwned>(&self, max: usize) -> Result<Vec<T>, Error> {
        self.get_many_with(max, None, false)
    }

    fn get_many_with<T: DeserializeOwned>(
        &self,
        max: usize,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<Vec<T>, Error> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let items = self.take(max, timeout, block)?;
        let decoded: Result<Vec<T>, serde_json::Error> = items.iter().map(T::deserialize).collect();
        decoded.map_err(|source| Error::Decode {
            value: serde_json::Value::Array(items),
            source,
        })
    }

    fn take(
        &self,
        count: usize,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<Vec<serde_json::Value>, Error> {
        let result: QueueGetResult = self.client.call(Op::QueueGet {
            queue: self.name.clone(),
            count,
            timeout_ms: timeout_ms(timeout),
            block,
            ack: false,
            visibility_ms: None,
            detach: false,
        })?;
        Ok(result.items)
    }

    /// Takes the oldest item under a lease (at-least-once delivery), waiting for one at
    /// most `timeout` (`None`: forever); then fails with
    /// [`ErrorCode::Empty`](crate::ErrorCode::Empty).
    ///
    /// The item stays stored until [`Delivery::ack`]. If this program does not ack it
    /// within `visibility`, nacks it, or its connection closes (it exits, crashes, or is
    /// killed), the item goes back to the head of the queue for another consumer, with
    /// its [`deliveries`](Delivery::deliveries) count raised. A restart of corrald also
    /// returns every item in flight. So a job is never lost, and may be processed twice:
    /// make processing idempotent, or check `deliveries() > 1`.
    ///
    /// If the item does not decode as `T`, it is nacked and the error is
    /// [`Error::Decode`], which holds it.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// # let client = corral_client::Client::connect()?;
    /// # fn process(_: &str) {}
    /// let jobs = client.queue("jobs");
    /// let job = jobs.get_ack::<String>(None, Duration::from_secs(60))?;
    /// process(&job.value);
    /// job.ack()?;                                   // done: removed for good
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn get_ack<T: DeserializeOwned>(
        &self,
        timeout: Option<Duration>,
        visibility: Duration,
    ) -> Result<Delivery<'c, T>, Error> {
        let result: QueueGetResult = self.client.call(Op::QueueGet {
            queue: self.name.clone(),
            count: 1,
            timeout_ms: timeout_ms(timeout),
            block: true,
            ack: true,
            visibility_ms: Some(
                u64::try_from(visibility.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            ),
            detach: false,
        })?;
        let (Some(item), Some(lease)) = (result.items.first(), result.leases.first()) else {
            return Err(Error::Protocol(format!(
                "acknowledged queue_get returned {} items and {} leases",
                result.items.len(),
                result.leases.len()
            )));
        };
        match T::deserialize(item) {
            Ok(value) => Ok(Delivery {
                client: self.client,
                queue: self.name.clone(),
                lease: *lease,
                value,
            }),
            Err(source) => {
                let _ = self.nack(&[lease.id]);
                Err(Error::Decode {
                    value: item.clone(),
                    source,
                })
            }
        }
    }

    /// Acks leases by id (from any connection): their items are removed for good.
    /// A lease no longer held fails with [`ErrorCode::NotHeld`](crate::ErrorCode::NotHeld)
    /// and nothing changes. [`Delivery::ack`] is the usual way.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.queue("jobs").ack(&[4294967297])?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn ack(&self, ids: &[u64]) -> Result<usize, Error> {
        let result: QueueAckResult = self.client.call(Op::QueueAck {
            queue: self.name.clone(),
            ids: ids.to_vec(),
        })?;
        Ok(result.count)
    }

    /// Returns leased items to the head of the queue now, for another delivery (or to
    /// the dead-letter queue once delivered `max_deliveries` times).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.queue("jobs").nack(&[4294967297])?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn nack(&self, ids: &[u64]) -> Result<usize, Error> {
        let result: QueueAckResult = self.client.call(Op::QueueNack {
            queue: self.name.clone(),
            ids: ids.to_vec(),
        })?;
        Ok(result.count)
    }

    /// Number of items waiting (0 for a queue that does not exist).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// println!("{} job(s) waiting", client.queue("jobs").len()?);
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    #[allow(clippy::len_without_is_empty)] // a remote call; `len()? == 0` says what it costs
    pub fn len(&self) -> Result<usize, Error> {
        Ok(self.info()?.depth)
    }

    /// The queue's depth, capacity, totals and waiting clients.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let info = client.queue("jobs").info()?;
    /// println!("{} put, {} taken", info.put_total, info.got_total);
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn info(&self) -> Result<QueueInfo, Error> {
        self.client.call(Op::QueueLen {
            queue: self.name.clone(),
        })
    }

    /// Removes every item; returns how many there were.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let dropped = client.queue("jobs").purge()?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn purge(&self) -> Result<usize, Error> {
        let result: RemovedResult = self.client.call(Op::QueuePurge {
            queue: self.name.clone(),
        })?;
        Ok(result.removed)
    }

    /// Removes the queue and its items; returns whether it existed. Clients waiting in
    /// `get` fail with [`ErrorCode::NotFound`](crate::ErrorCode::NotFound).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// if !client.queue("jobs").delete()? {
    ///     println!("there was no queue `jobs`");
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn delete(&self) -> Result<bool, Error> {
        let result: RemovedResult = self.client.call(Op::QueueDelete {
            queue: self.name.clone(),
        })?;
        Ok(result.removed > 0)
    }

    /// Creates the queue, or changes its capacity: `maxsize` items at most, or unbounded
    /// with `None`.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let info = client.queue("jobs").declare(Some(1000))?;
    /// assert_eq!(info.maxsize, Some(1000));
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn declare(&self, maxsize: Option<usize>) -> Result<QueueInfo, Error> {
        self.declare_dead_letter(maxsize, None, None)
    }

    /// Creates the queue, or changes its settings: capacity, and for acknowledged gets
    /// the deliveries after which an item returned unacked goes to the dead-letter queue
    /// `dead_letter` (`None`: `NAME.dead`) instead of back to this one. Settings left
    /// out are reset.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let info = client.queue("jobs").declare_dead_letter(None, Some(5), None)?;
    /// assert_eq!(info.dead_letter.as_deref(), Some("jobs.dead"));
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn declare_dead_letter(
        &self,
        maxsize: Option<usize>,
        max_deliveries: Option<u32>,
        dead_letter: Option<&str>,
    ) -> Result<QueueInfo, Error> {
        self.client.call(Op::QueueDeclare {
            queue: self.name.clone(),
            maxsize,
            max_deliveries,
            dead_letter: dead_letter.map(str::to_owned),
        })
    }
}

/// An item taken by [`Queue::get_ack`], leased until it is acked, nacked, its
/// visibility timeout passes, or the connection closes. Dropping it without an ack
/// leaves the lease to end by itself (timeout or disconnect).
#[derive(Debug)]
#[must_use = "ack the delivery when its processing is done, or it is delivered again"]
pub struct Delivery<'c, T> {
    client: &'c Client,
    queue: String,
    lease: Lease,
    /// The item.
    pub value: T,
}

impl<T> Delivery<'_, T> {
    /// The lease id (for [`Queue::ack`] from elsewhere).
    pub fn id(&self) -> u64 {
        self.lease.id
    }

    /// How many times the item has been delivered, this time included: more than 1
    /// means an earlier consumer did not ack it (it failed, died or took too long).
    pub fn deliveries(&self) -> u32 {
        self.lease.deliveries
    }

    /// Removes the item for good. Fails with
    /// [`ErrorCode::NotHeld`](crate::ErrorCode::NotHeld) if the lease ended first (the
    /// item was or will be delivered again).
    pub fn ack(self) -> Result<T, Error> {
        self.client.queue(&self.queue).ack(&[self.lease.id])?;
        Ok(self.value)
    }

    /// Puts the item back at the head of the queue now, for another delivery.
    pub fn nack(self) -> Result<T, Error> {
        self.client.queue(&self.queue).nack(&[self.lease.id])?;
        Ok(self.value)
    }
}
