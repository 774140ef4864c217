//! [`Counter`]: a shared, durable `i64`.

use corral_proto::{CasResult, CounterValue, Op, RemovedResult};

use crate::{Client, Error};

/// A handle on one named counter, from [`Client::counter`]: like Python's
/// `multiprocessing.Value('q')`, but every operation is atomic in corrald, so no lock is
/// needed around [`add`](Counter::add). A counter that was never set reads 0.
///
/// ```no_run
/// let client = corral_client::Client::connect()?;
/// let processed = client.counter("processed");
/// processed.add(10)?;
/// println!("{} processed", processed.get()?);
/// # Ok::<(), corral_client::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Counter<'c> {
    client: &'c Client,
    name: String,
}

impl<'c> Counter<'c> {
    pub(crate) fn new(client: &'c Client, name: String) -> Counter<'c> {
        Counter { client, name }
    }

    /// The counter's name.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// assert_eq!(client.counter("hits").name(), "hits");
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current value (0 if it was never set).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let hits = client.counter("hits").get()?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn get(&self) -> Result<i64, Error> {
        let result: CounterValue = self.client.call(Op::CounterGet {
            counter: self.name.clone(),
        })?;
        Ok(result.value)
    }

    /// Sets the value.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.counter("hits").set(0)?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn set(&self, value: i64) -> Result<(), Error> {
        let _: CounterValue = self.client.call(Op::CounterSet {
            counter: self.name.clone(),
            value,
        })?;
        Ok(())
    }

    /// Adds `delta` (which may be negative) and returns the new value. A result that does
    /// not fit an `i64` fails with [`ErrorCode::Overflow`](crate::ErrorCode::Overflow) and
    /// leaves the counter as it was.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let left = client.counter("slots").add(-1)?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn add(&self, delta: i64) -> Result<i64, Error> {
        let result: CounterValue = self.client.call(Op::CounterAdd {
            counter: self.name.clone(),
            delta,
        })?;
        Ok(result.value)
    }

    /// Sets the value to `new` only if it is `expected`. The result says whether it was
    /// swapped, and the value now (the current one when it was not).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let leader = client.counter("leader");
    /// let me = std::process::id() as i64;
    /// if leader.compare_and_swap(0, me)?.swapped {
    ///     println!("I am the leader");
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn compare_and_swap(&self, expected: i64, new: i64) -> Result<CasResult, Error> {
        self.client.call(Op::CounterCas {
            counter: self.name.clone(),
            expected,
            new,
        })
    }

    /// Forgets the counter; returns whether it existed.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.counter("hits").delete()?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn delete(&self) -> Result<bool, Error> {
        let result: RemovedResult = self.client.call(Op::CounterDelete {
            counter: self.name.clone(),
        })?;
        Ok(result.removed > 0)
    }
}
