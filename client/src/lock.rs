//! [`Lock`] and [`LockGuard`]: named locks with fencing tokens.

use std::time::Duration;

use corral_proto::{ErrorCode, LockGrant, LockInfo, LockStatusResult, Op};

use crate::client::timeout_ms;
use crate::{Client, Error};

/// A handle on one named lock, from [`Client::lock`]: like Python's
/// `multiprocessing.Lock`, but shared by every program on the machine.
///
/// A lock is granted to a *connection*: it is held until [`LockGuard::release`], the
/// guard's drop, or the [`Client`] closing (so a crashed holder never keeps it). Waiters
/// are served first come, first served. Each grant carries a fencing token that is larger
/// than every token granted before.
///
/// The same client asking again for a lock it already holds waits for itself; use one
/// guard per lock and client.
///
/// ```no_run
/// use std::time::Duration;
///
/// let client = corral_client::Client::connect()?;
/// let lock = client.lock("nightly-report");
/// let guard = lock.acquire(Some(Duration::from_secs(10)))?;
/// println!("holding it with token {}", guard.token());
/// guard.release()?;
/// # Ok::<(), corral_client::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Lock<'c> {
    client: &'c Client,
    name: String,
}

impl<'c> Lock<'c> {
    pub(crate) fn new(client: &'c Client, name: String) -> Lock<'c> {
        Lock { client, name }
    }

    /// The lock's name.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// assert_eq!(client.lock("deploy").name(), "deploy");
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes the lock, waiting at most `timeout` (`None`: as long as it takes); then
    /// fails with [`ErrorCode::Timeout`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use corral_client::ErrorCode;
    ///
    /// # let client = corral_client::Client::connect()?;
    /// match client.lock("deploy").acquire(Some(Duration::from_secs(30))) {
    ///     Ok(guard) => { /* deploy, then drop the guard */ }
    ///     Err(e) if e.code() == Some(ErrorCode::Timeout) => eprintln!("another deploy is running"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<LockGuard<'c>, Error> {
        self.acquire_with(timeout_ms(timeout), true)
    }

    /// Takes the lock if it is free: `Ok(None)` if another client holds it.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// match client.lock("cron-cleanup").try_acquire()? {
    ///     Some(_guard) => { /* clean up; released at the end of the block */ }
    ///     None => println!("already running elsewhere"),
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Option<LockGuard<'c>>, Error> {
        match self.acquire_with(None, false) {
            Ok(guard) => Ok(Some(guard)),
            Err(e) if e.code() == Some(ErrorCode::Locked) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn acquire_with(&self, timeout_ms: Option<u64>, block: bool) -> Result<LockGuard<'c>, Error> {
        let grant: LockGrant = self.client.call(Op::LockAcquire {
            lock: self.name.clone(),
            timeout_ms,
            block,
        })?;
        Ok(LockGuard {
            client: self.client,
            name: self.name.clone(),
            token: grant.token,
            held: true,
        })
    }

    /// Who holds the lock, since when, and how many wait (a lock nobody holds or waits
    /// for has no holder and no waiters).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let info = client.lock("deploy").status()?;
    /// if let Some(holder) = info.holder {
    ///     println!("held by pid {:?} for {} ms", holder.pid, holder.held_ms);
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn status(&self) -> Result<LockInfo, Error> {
        let result: LockStatusResult = self.client.call(Op::LockStatus {
            lock: Some(self.name.clone()),
        })?;
        Ok(result
            .locks
            .into_iter()
            .find(|l| l.lock == self.name)
            .unwrap_or_else(|| LockInfo {
                lock: self.name.clone(),
                holder: None,
                waiters: 0,
            }))
    }
}

/// A held lock, from [`Lock::acquire`] or [`Lock::try_acquire`]. Dropping it releases the
/// lock (ignoring errors: if the connection is gone, so is the lock);
/// [`release`](LockGuard::release) does the same and reports errors.
///
/// Dropping a guard inside a [`Client::call_streaming`] callback of its own client cannot
/// release it (the connection is busy): the lock is then held until the client is dropped.
///
/// ```no_run
/// # let client = corral_client::Client::connect()?;
/// {
///     let _guard = client.lock("deploy").acquire(None)?;
///     // ... exclusive work ...
/// } // released here
/// # Ok::<(), corral_client::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'c> {
    client: &'c Client,
    name: String,
    token: u64,
    held: bool,
}

impl LockGuard<'_> {
    /// The fencing token of this grant: larger than every token granted before, for any
    /// lock, even across restarts of corrald. Hand it to the resource the lock protects
    /// so that it can refuse writes carrying an older token.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let guard = client.lock("db").acquire(None)?;
    /// println!("UPDATE config SET v = 1 WHERE fence < {}", guard.token());
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The lock's name.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let guard = client.lock("db").acquire(None)?;
    /// assert_eq!(guard.name(), "db");
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Releases the lock. [`ErrorCode::NotHeld`] means it was no longer held by this
    /// connection.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let guard = client.lock("db").acquire(None)?;
    /// guard.release()?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn release(mut self) -> Result<(), Error> {
        self.held = false;
        let _: serde_json::Value = self.client.call(Op::LockRelease {
            lock: self.name.clone(),
        })?;
        Ok(())
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if self.held {
            let _ = self
                .client
                .call_if_idle::<serde_json::Value>(Op::LockRelease {
                    lock: std::mem::take(&mut self.name),
                });
        }
    }
}
