//! [`Semaphore`] and [`Event`]: counting semaphores and set/clear flags in corrald,
//! whose waiters are woken by the release or the set that lets them go.

use std::time::Duration;

use corral_proto::{ErrorCode, EventValue, Op, RemovedResult, SemaphoreValue};

use crate::client::timeout_ms;
use crate::{Client, Error};

/// A handle on one named semaphore, from [`Client::semaphore`]: Python's
/// `multiprocessing.Semaphore` / `BoundedSemaphore` across programs. Its permits are
/// durable and not bound to a connection: a permit taken by a client that dies stays
/// taken until some client releases one.
///
/// ```no_run
/// let client = corral_client::Client::connect()?;
/// let slots = client.semaphore("gpu-slots");
/// slots.create(2, Some(2))?;
/// slots.acquire(None)?;
/// // ... use one of the two slots ...
/// slots.release()?;
/// # Ok::<(), corral_client::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Semaphore<'c> {
    client: &'c Client,
    name: String,
}

impl<'c> Semaphore<'c> {
    pub(crate) fn new(client: &'c Client, name: String) -> Semaphore<'c> {
        Semaphore { client, name }
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates it with `value` free permits and, for a bounded one, the most free
    /// permits a release may leave. An existing one with the same bound is left as it
    /// is (its state is returned); another bound is [`ErrorCode::TypeMismatch`].
    pub fn create(&self, value: u64, bound: Option<u64>) -> Result<SemaphoreValue, Error> {
        self.client.call(Op::SemaphoreCreate {
            semaphore: self.name.clone(),
            value,
            bound,
        })
    }

    /// Takes a permit, waiting at most `timeout` (`None`: as long as it takes) for a
    /// release; then fails with [`ErrorCode::Timeout`]. Returns the free permits left.
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<u64, Error> {
        let result: SemaphoreValue = self.client.call(Op::SemaphoreAcquire {
            semaphore: self.name.clone(),
            timeout_ms: timeout_ms(timeout),
            block: true,
        })?;
        Ok(result.value)
    }

    /// Takes a permit if one is free; `Ok(false)` if none is.
    pub fn try_acquire(&self) -> Result<bool, Error> {
        let taken: Result<SemaphoreValue, Error> = self.client.call(Op::SemaphoreAcquire {
            semaphore: self.name.clone(),
            timeout_ms: None,
            block: false,
        });
        match taken {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some(ErrorCode::Locked) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives a permit back (to the oldest waiter, if any); past a bound it fails with
    /// [`ErrorCode::Overflow`]. Returns the free permits now.
    pub fn release(&self) -> Result<u64, Error> {
        let result: SemaphoreValue = self.client.call(Op::SemaphoreRelease {
            semaphore: self.name.clone(),
        })?;
        Ok(result.value)
    }

    /// Free permits, bound and waiters now.
    pub fn get(&self) -> Result<SemaphoreValue, Error> {
        self.client.call(Op::SemaphoreGet {
            semaphore: self.name.clone(),
        })
    }

    /// Forgets the semaphore (its waiters fail with `not_found`); returns whether it existed.
    pub fn delete(&self) -> Result<bool, Error> {
        let result: RemovedResult = self.client.call(Op::SemaphoreDelete {
            semaphore: self.name.clone(),
        })?;
        Ok(result.removed > 0)
    }
}

/// A handle on one named event, from [`Client::event`]: Python's `multiprocessing.Event`
/// across programs. An event never used is clear; its state is durable.
///
/// ```no_run
/// use std::time::Duration;
/// let client = corral_client::Client::connect()?;
/// let ready = client.event("warm-cache-ready");
/// if !ready.wait(Some(Duration::from_secs(30)))? {
///     eprintln!("still warming up");
/// }
/// # Ok::<(), corral_client::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Event<'c> {
    client: &'c Client,
    name: String,
}

impl<'c> Event<'c> {
    pub(crate) fn new(client: &'c Client, name: String) -> Event<'c> {
        Event { client, name }
    }

    /// The event's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets it: every waiter returns at once.
    pub fn set(&self) -> Result<(), Error> {
        let _: EventValue = self.client.call(Op::EventSet {
            event: self.name.clone(),
        })?;
        Ok(())
    }

    /// Clears it.
    pub fn clear(&self) -> Result<(), Error> {
        let _: EventValue = self.client.call(Op::EventClear {
            event: self.name.clone(),
        })?;
        Ok(())
    }

    /// Whether it is set.
    pub fn is_set(&self) -> Result<bool, Error> {
        let result: EventValue = self.client.call(Op::EventGet {
            event: self.name.clone(),
        })?;
        Ok(result.set)
    }

    /// Waits until it is set, at most `timeout` (`None`: as long as it takes); returns
    /// whether it is set.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        let result: EventValue = self.client.call(Op::EventWait {
            event: self.name.clone(),
            timeout_ms: timeout_ms(timeout),
        })?;
        Ok(result.set)
    }

    /// Forgets the event; returns whether it existed.
    pub fn delete(&self) -> Result<bool, Error> {
        let result: RemovedResult = self.client.call(Op::EventDelete {
            event: self.name.clone(),
        })?;
        Ok(result.removed > 0)
    }
}

impl Client {
    /// A handle on the semaphore `name` (create it with [`Semaphore::create`]).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let free = client.semaphore("slots").get()?.value;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn semaphore(&self, name: impl Into<String>) -> Semaphore<'_> {
        Semaphore::new(self, name.into())
    }

    /// Every semaphore, by name.
    pub fn semaphores(&self) -> Result<Vec<SemaphoreValue>, Error> {
        let result: corral_proto::SemaphoreListResult = self.call(Op::SemaphoreList {})?;
        Ok(result.semaphores)
    }

    /// A handle on the event `name`.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.event("go").set()?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn event(&self, name: impl Into<String>) -> Event<'_> {
        Event::new(self, name.into())
    }

    /// Every event, by name.
    pub fn events(&self) -> Result<Vec<EventValue>, Error> {
        let result: corral_proto::EventListResult = self.call(Op::EventList {})?;
        Ok(result.events)
    }

    /// Holds the anonymous session `session` (see [`Op::AnonHold`]): for this
    /// connection (`pid: None`) or for the process `pid` until it exits. The objects
    /// tied to it with [`Client::anon_add`] are deleted once every holder is gone.
    pub fn anon_hold(
        &self,
        session: &str,
        pid: Option<u32>,
    ) -> Result<corral_proto::AnonSession, Error> {
        self.call(Op::AnonHold {
            session: session.to_owned(),
            pid,
        })
    }

    /// Ties the object `name` of `kind` to the held session `session`.
    pub fn anon_add(
        &self,
        session: &str,
        kind: corral_proto::AnonKind,
        name: &str,
    ) -> Result<corral_proto::AnonSession, Error> {
        self.call(Op::AnonAdd {
            session: session.to_owned(),
            kind,
            name: name.to_owned(),
        })
    }
}
