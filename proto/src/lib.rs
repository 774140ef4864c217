//! The wire protocol between `corrald` and its clients.
//!
//! Framing: newline-delimited JSON over a Unix stream socket. Every request is one
//! line, a JSON object with an `id` (chosen by the client) and an `op`; every reply
//! is one line echoing that `id`. A client may pipeline: send many requests before
//! reading replies; replies to quick operations arrive in request order, while a
//! long-running operation (`wait`, `logs` with `follow`, `run` with `wait`) answers
//! when it finishes and does not hold up the requests behind it.
//!
//! A reply carries exactly one of `result` (success), `error` (failure) or `event`
//! (an intermediate item of a streaming operation, e.g. one log line; the stream
//! ends with a `result` or an `error` for the same id).
//!
//! A frame is at most [`DEFAULT_MAX_FRAME`] bytes unless the daemon is configured
//! otherwise; an oversized frame is answered with [`ErrorCode::FrameTooLarge`] and
//! discarded up to its newline.
//!
//! Clients open with [`Op::Hello`] carrying [`PROTOCOL_VERSION`]; the daemon refuses
//! a different major version with [`ErrorCode::UnsupportedVersion`].
//!
//! Only types meant for clients derive `Serialize` here: everything in this crate is a
//! promise to programs written against the protocol.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod request;

/// Version of this protocol; bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default cap on one frame (one JSON line), in bytes.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Largest reply corrald sends, in bytes of its frame: a reply that would be larger is
/// replaced by a `too_large` error that says how to ask for less.
pub const MAX_REPLY_BYTES: usize = 8 << 20;

/// Most array elements in one reply ([`Op::ArrayGet`] slices, [`ArrayValue`]).
pub const MAX_ARRAY_SLICE: usize = 65_536;

/// Most bytes of items (as stored JSON) one [`Op::QueueGet`] hands out: a `count` that
/// would take more gets fewer items (always at least one).
pub const MAX_GET_BYTES: usize = 1 << 20;

/// One request: an id echoed in the reply, and the operation.
///
/// Deserialized by hand (see `request.rs`): `id` and `op` are taken from the object and
/// the op's fields go straight from the parser to the variant, with no buffering.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request {
    /// Chosen by the client; echoed in every reply to this request.
    pub id: u64,
    /// What to do.
    #[serde(flatten)]
    pub op: Op,
}

/// Declares [`Op`] and, from the same list of variants, the private `OpFields`: the
/// same variants and fields, externally tagged, whose derived code reads a variant's
/// fields from any map. [`Request`]'s Deserialize hands it the request's own map, so no
/// request is buffered (an internally tagged enum collects every field first).
macro_rules! declare_ops {
    (
        $(#[$meta:meta])*
        pub enum Op {
            $(
                $(#[$vmeta:meta])*
                $variant:ident {
                    $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
                }
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub enum Op {
            $( $(#[$vmeta])* $variant { $( $(#[$fmeta])* $field: $ty ),* } ),*
        }

        /// [`Op`], externally tagged, for [`Request`]'s Deserialize.
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        enum OpFields {
            $( $(#[$vmeta])* $variant { $( $(#[$fmeta])* $field: $ty ),* } ),*
        }

        impl From<OpFields> for Op {
            fn from(fields: OpFields) -> Op {
                match fields {
                    $( OpFields::$variant { $($field),* } => Op::$variant { $($field),* } ),*
                }
            }
        }
    };
}

declare_ops! {
/// Every operation the daemon understands, tagged by `"op"` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Protocol handshake. Result: [`HelloResult`].
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        version: u32,
        /// A free-form client name, for logs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// Units and their instances. Result: [`StatusResult`].
    Status {
        /// Only this unit (an unknown name is `not_found`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
    },
    /// Scheduled tasks with their last and next runs. Result: [`TimersResult`].
    Timers {},
    /// Start units (with what they `require`). Result: [`UnitsResult`].
    ///
    /// Without `wait`, answers once the instances are on their way (spawning or waiting
    /// for what they require). With `wait`, answers once every instance of the named
    /// units has started: a service has been running for the start window (1 s), a task
    /// has been running for it or has exited with code 0. An instance that fails first
    /// (its command cannot be started, it exits, a requirement fails) makes it a
    /// `failed` error naming each such instance and why, with the last lines of its log
    /// in `details`.
    Start {
        /// Unit names.
        units: Vec<String>,
        /// Answer once the instances have started or failed to.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wait: bool,
        /// With `wait`: give up after this many milliseconds with a `timeout` error (the
        /// units go on starting).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Stop units: stop signal to each instance's process group, then SIGKILL after the
    /// stop timeout. Answers once every instance is down. Result: [`UnitsResult`].
    Stop {
        /// Unit names.
        units: Vec<String>,
    },
    /// Stop, then start. Result: [`UnitsResult`]. `wait` and `timeout_ms` as for
    /// [`Op::Start`] (the timeout counts from the request, stopping included).
    Restart {
        /// Unit names.
        units: Vec<String>,
        /// Answer once the instances have started again or failed to.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wait: bool,
        /// With `wait`: give up after this many milliseconds with a `timeout` error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Send a signal to every running instance's process group (like `systemctl kill`);
    /// what follows is up to the unit's restart policy. Result: [`UnitsResult`].
    Kill {
        /// Unit names.
        units: Vec<String>,
        /// Signal name (`SIGKILL`, `TERM`, ...) or number; default SIGKILL.
        #[serde(default = "default_kill_signal")]
        signal: String,
    },
    /// Block until no instance of the unit is running or due to run again.
    /// Result: [`WaitResult`].
    Wait {
        /// Unit name.
        unit: String,
        /// Give up after this many milliseconds with a `timeout` error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// The last lines of a unit's instance logs; with `follow`, then every new line
    /// as an [`LogLine`] event until the client disconnects. Result: [`LogsResult`].
    Logs {
        /// Unit name.
        unit: String,
        /// One instance only (default: all of them).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<u32>,
        /// How many lines from the end of each instance's log.
        #[serde(default = "default_log_lines")]
        lines: usize,
        /// Keep streaming new lines.
        #[serde(default)]
        follow: bool,
    },
    /// Re-read the unit files. Result: [`ReloadResult`]; a bad file gives an
    /// `invalid_config` error listing every problem, and nothing changes.
    Reload {},
    /// Start a transient task from a command line (like `systemd-run`).
    /// Result: [`RunResult`]; with `wait`, the output first streams as [`LogLine`]
    /// events, and the result carries the exit status.
    Run {
        /// Unit name (default: `run-N`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Program and arguments.
        command: Vec<String>,
        /// Extra environment variables.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        /// Working directory (absolute).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        working_dir: Option<String>,
        /// Stream output and answer when the process has exited.
        #[serde(default)]
        wait: bool,
        /// Like a `daemon = true` unit: dies with corrald (even on `kill -9`), and is
        /// stopped first at shutdown instead of joined.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        daemon: bool,
        /// The request carries two descriptors (`SCM_RIGHTS`, sent with its first byte):
        /// they become the process's stdout and stderr instead of its log file, so its
        /// output goes where the client's goes. stdin stays `/dev/null`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stdio_fds: bool,
        /// Stopped (SIGTERM, then SIGKILL after the unit's stop timeout) when the
        /// connection that sent this request closes, for instance because the client
        /// was killed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stop_on_disconnect: bool,
        /// The program that asks, kept with the transient unit and shown with it by
        /// `status` (children listed under their parent): its pid (default: the process
        /// that sent the request) and a label such as its command line.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<RunParent>,
        /// An anonymous session ([`Op::AnonHold`]) the process holds from before it is
        /// spawned until it exits, as if it had called `anon_hold` with its pid first:
        /// the session's objects outlive the client even if it dies right after `run`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anon_session: Option<String>,
    },
    /// Stop corrald by its lifecycle rules. Result: `{}` once shutdown has begun; with
    /// `wait`, [`ShutdownProgress`] events while units stop and `{"stopped": true}` once
    /// every instance is down; with `plan`, the [`ShutdownPlan`] and nothing changes.
    Shutdown {
        /// Only say what a shutdown would do now.
        #[serde(default)]
        plan: bool,
        /// Report progress and answer when everything is down.
        #[serde(default)]
        wait: bool,
    },

    /// Create a queue, or change its settings (each one left out is reset to its
    /// default). Result: [`QueueInfo`].
    QueueDeclare {
        /// Queue name.
        queue: String,
        /// Capacity (waiting plus in-flight items); `None` for unbounded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        maxsize: Option<usize>,
        /// An item delivered this many times by acknowledged gets and returned unacked
        /// once more goes to the dead-letter queue instead of back to this one. `None`:
        /// redelivered forever.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_deliveries: Option<u32>,
        /// The dead-letter queue; `None`: `NAME.dead`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dead_letter: Option<String>,
    },
    /// Append an item (any JSON value); answered once it is durable. On a full queue,
    /// waits for room (up to `timeout_ms`; forever if absent) or, with `block: false`,
    /// fails at once with `full`. Result: [`QueuePutResult`].
    QueuePut {
        /// Queue name (created on first use).
        queue: String,
        /// The item.
        value: Value,
        /// Wait for room at most this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// Wait for room at all.
        #[serde(default = "yes")]
        block: bool,
    },
    /// Take up to `count` items (at least one), oldest first, as many as fit in
    /// [`MAX_GET_BYTES`] (always at least one); the items are removed in the transaction
    /// committed before this reply (at most once). With `ack`, they are instead leased (at
    /// least once): they stay stored, their delivery count is raised in that transaction,
    /// and they are removed by [`Op::QueueAck`]; a lease that is nacked, passes
    /// `visibility_ms`, or whose connection closes (unless `detach`) puts its item back at
    /// the head of the queue. On an empty queue, waits (up to
    /// `timeout_ms`; forever if absent) or, with `block: false`, fails at once with
    /// `empty`. Result: [`QueueGetResult`].
    QueueGet {
        /// Queue name.
        queue: String,
        /// Most items to take.
        #[serde(default = "one")]
        count: usize,
        /// Wait for an item at most this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// Wait at all.
        #[serde(default = "yes")]
        block: bool,
        /// Lease the items (acknowledged delivery) instead of removing them.
        #[serde(default, skip_serializing_if = "is_false")]
        ack: bool,
        /// With `ack`: how long the lease lasts ([`DEFAULT_VISIBILITY_MS`] if absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        visibility_ms: Option<u64>,
        /// With `ack`: the lease outlives this connection (only the visibility timeout,
        /// an ack or a nack ends it), so another connection may ack it.
        #[serde(default, skip_serializing_if = "is_false")]
        detach: bool,
    },
    /// Remove leased items for good (their processing is done). Result: [`QueueAckResult`].
    /// A lease that is no longer held (acked, nacked, expired, or from before a restart
    /// of corrald) is `not_held`, and nothing changes.
    QueueAck {
        /// Queue name.
        queue: String,
        /// Lease ids from [`QueueGetResult::leases`].
        ids: Vec<u64>,
    },
    /// Put leased items back at the head of the queue now, for another delivery (or to
    /// the dead-letter queue past `max_deliveries`). Result: [`QueueAckResult`]; a lease
    /// no longer held is `not_held`.
    QueueNack {
        /// Queue name.
        queue: String,
        /// Lease ids from [`QueueGetResult::leases`].
        ids: Vec<u64>,
    },
    /// Number of items. An unknown queue is empty: 0. Result: [`QueueInfo`].
    QueueLen {
        /// Queue name.
        queue: String,
    },
    /// Every queue. Result: [`QueueListResult`].
    QueueList {},
    /// Remove every item. Result: [`RemovedResult`].
    QueuePurge {
        /// Queue name.
        queue: String,
    },
    /// Remove the queue and its items; waiting getters get `not_found`. Result: [`RemovedResult`].
    QueueDelete {
        /// Queue name.
        queue: String,
    },

    /// A counter's value (0 if it was never set). Result: [`CounterValue`].
    CounterGet {
        /// Counter name.
        counter: String,
    },
    /// Set a counter. Result: [`CounterValue`].
    CounterSet {
        /// Counter name.
        counter: String,
        /// New value.
        value: i64,
    },
    /// Add to a counter (created at 0); overflow is an `overflow` error, never a wrap.
    /// Result: [`CounterValue`] with the new value.
    CounterAdd {
        /// Counter name.
        counter: String,
        /// Amount (may be negative).
        delta: i64,
    },
    /// Set to `new` only if the value is `expected`. Result: [`CasResult`].
    CounterCas {
        /// Counter name.
        counter: String,
        /// Value required for the swap.
        expected: i64,
        /// Value written on success.
        new: i64,
    },
    /// Every counter. Result: [`CounterListResult`].
    CounterList {},
    /// Forget a counter. Result: [`RemovedResult`].
    CounterDelete {
        /// Counter name.
        counter: String,
    },

    /// Create a fixed-length numeric array (idempotent if the type and length match).
    /// Result: [`ArrayValue`].
    ArrayCreate {
        /// Array name.
        array: String,
        /// Element type.
        kind: ArrayKind,
        /// Number of elements.
        length: usize,
        /// Initial values (default: zeros); must have `length` elements.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        values: Option<Vec<serde_json::Number>>,
    },
    /// The whole array or, with `offset`/`length`, a slice of it ([`ArrayValue`]); with
    /// `index`, one element ([`ArrayItem`]). One reply carries at most
    /// [`MAX_ARRAY_SLICE`] elements: a longer array is read in slices (a request for more
    /// is a `too_large` error naming the limit).
    ArrayGet {
        /// Array name.
        array: String,
        /// Element index, from 0.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        /// First element of the slice (default 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<usize>,
        /// Most elements of the slice (fewer at the end of the array; 0 gives only the
        /// type and length); at most [`MAX_ARRAY_SLICE`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        length: Option<usize>,
    },
    /// Set one element. Result: [`ArrayItem`].
    ArraySet {
        /// Array name.
        array: String,
        /// Element index.
        index: usize,
        /// New value (an integer for `i64` arrays).
        value: serde_json::Number,
    },
    /// Add to one element. Result: [`ArrayItem`] with the new value.
    ArrayAdd {
        /// Array name.
        array: String,
        /// Element index.
        index: usize,
        /// Amount (an integer for `i64` arrays).
        delta: serde_json::Number,
    },
    /// Every array. Result: [`ArrayListResult`].
    ArrayList {},
    /// Forget an array. Result: [`RemovedResult`].
    ArrayDelete {
        /// Array name.
        array: String,
    },

    /// Submit a pool job: a parallel map of `command` over `inputs` with at most
    /// `workers` items running at once. Result: [`PoolJob`] once the job is stored.
    PoolSubmit {
        /// A name for the job, for people.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Submit to this named pool (a `kind = "pool"` unit): its command, workers, mode,
        /// environment and working directory apply; `command` must then be empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
        /// Program and arguments. Exec mode: `{}` in any argument becomes the input (if no
        /// argument has `{}`, the input is appended). Stream mode: run as is.
        #[serde(default)]
        command: Vec<String>,
        /// The inputs, in order; results come back in this order.
        inputs: Vec<String>,
        /// Most items at once (exec) or worker processes (stream); default: CPUs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workers: Option<usize>,
        /// Extra attempts for a failed item.
        #[serde(default)]
        retries: u32,
        /// Per-item time limit; the item's process group is killed after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// Stream mode: long-lived workers reading one input line on stdin and answering
        /// one line on stdout.
        #[serde(default)]
        stream: bool,
        /// Working directory (absolute).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        working_dir: Option<String>,
        /// Extra environment variables.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        /// Cancel the job when the connection that submitted it closes (the client
        /// exited or was killed); not when corrald itself stops, so the job still
        /// resumes after a restart.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cancel_on_disconnect: bool,
        /// An open job (stream mode): it does not end when its items are done but takes
        /// more with [`Op::PoolAppend`] until [`Op::PoolClose`]; `inputs` may be empty.
        /// Its workers start at once and live as long as the job (a worker that dies,
        /// or retires after `max_items_per_worker`, is replaced), so the calls of one
        /// client-side pool share warm workers.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        open: bool,
        /// Stream mode: a worker is sent at most this many items, then its stdin is
        /// closed and a fresh worker takes its place (Python's `maxtasksperchild`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_items_per_worker: Option<u64>,
    },
    /// Append inputs to an open job (see `open` of [`Op::PoolSubmit`]), by the uid that
    /// submitted it. They form one batch: wait for its results with [`Op::PoolWait`]
    /// and `from`/`count`. Result: [`PoolBatch`].
    PoolAppend {
        /// Job id.
        job: u64,
        /// The inputs, in order.
        inputs: Vec<String>,
        /// Cancel the job when this connection closes (as `cancel_on_disconnect` of
        /// [`Op::PoolSubmit`]): how a client binds its job again after a restart of corrald.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cancel_on_disconnect: bool,
        /// The client has read the results of every item before this index: corrald
        /// drops those items (inputs and results, in memory and in its database) once
        /// they are done, so a job that serves many calls stays bounded. A wait for
        /// results of dropped items is refused; their counts stay in the job's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        release_before: Option<usize>,
    },
    /// No more inputs for an open job: it ends once its items are done (its workers
    /// then get EOF on stdin). Result: [`PoolJob`].
    PoolClose {
        /// Job id.
        job: u64,
    },
    /// Wait for a job to end. With `results`, every item's [`PoolItem`] streams as an
    /// event in input order, each as soon as it and all before it are done. Result: [`PoolJob`].
    PoolWait {
        /// Job id.
        job: u64,
        /// Stream the items' results.
        #[serde(default)]
        results: bool,
        /// Give up after this long with a `timeout` error (the job runs on).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// Only the items from this index on (a batch of an open job, or the rest of a
        /// wait cut short): the wait ends once the items `from..from + count` are done.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<usize>,
        /// With `from`: how many items (default: up to the job's current end).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<usize>,
    },
    /// A job's progress. Result: [`PoolJob`].
    PoolStatus {
        /// Job id.
        job: u64,
    },
    /// The results of a job's finished items, in input order. Result: [`PoolResults`].
    PoolResults {
        /// Job id.
        job: u64,
    },
    /// Every job. Result: [`PoolListResult`].
    PoolList {},
    /// Stop a job: running items' process groups are killed, pending ones skipped.
    /// Result: [`PoolJob`].
    PoolCancel {
        /// Job id.
        job: u64,
    },
    /// Remove a finished (or cancelled) job and its items; a running job is refused
    /// (`failed`). Result: [`PoolJob`], the job as it was.
    PoolRemove {
        /// Job id.
        job: u64,
    },

    /// Take a lock, waiting first come first served (up to `timeout_ms`; forever if
    /// absent) or, with `block: false`, failing at once with `locked`. The lock belongs
    /// to this connection: it is released when the connection closes. Result: [`LockGrant`].
    LockAcquire {
        /// Lock name.
        lock: String,
        /// Wait at most this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// Wait at all.
        #[serde(default = "yes")]
        block: bool,
    },
    /// Release a lock this connection holds (`not_held` otherwise). Result: `{}`.
    LockRelease {
        /// Lock name.
        lock: String,
    },
    /// Holders and waiters of one lock or of every lock. Result: [`LockStatusResult`].
    LockStatus {
        /// Only this lock.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lock: Option<String>,
    },

    /// Create a counting semaphore with `value` free permits and, for a bounded one, a
    /// `bound` that a release may not pass. If it exists already with the same bound,
    /// nothing changes (its permits are as they are); another bound is `type_mismatch`.
    /// Durable, like counters. Result: [`SemaphoreValue`].
    SemaphoreCreate {
        /// Semaphore name.
        semaphore: String,
        /// Free permits at creation.
        value: u64,
        /// Most free permits (`BoundedSemaphore`): a release past it is `overflow`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bound: Option<u64>,
    },
    /// Take one permit, waiting first come first served for a release (up to
    /// `timeout_ms`; forever if absent) or, with `block: false`, failing at once with
    /// `locked`; a wait that times out is `timeout`. Permits are not bound to the
    /// connection: one taken stays taken until someone releases it (as with
    /// `multiprocessing`), even if this client dies. Result: [`SemaphoreValue`] after the
    /// take, answered once durable.
    SemaphoreAcquire {
        /// Semaphore name (`not_found` if it was never created).
        semaphore: String,
        /// Wait at most this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// Wait at all.
        #[serde(default = "yes")]
        block: bool,
    },
    /// Give one permit back: to the oldest waiter if there is one, else to the free
    /// permits (`overflow` past a bound). Any client may release. Result: [`SemaphoreValue`].
    SemaphoreRelease {
        /// Semaphore name.
        semaphore: String,
    },
    /// A semaphore's free permits. Result: [`SemaphoreValue`].
    SemaphoreGet {
        /// Semaphore name (`not_found` if it was never created).
        semaphore: String,
    },
    /// Every semaphore. Result: [`SemaphoreListResult`].
    SemaphoreList {},
    /// Forget a semaphore; its waiters get `not_found`. Result: [`RemovedResult`].
    SemaphoreDelete {
        /// Semaphore name.
        semaphore: String,
    },

    /// Set an event (created on first use): every waiter is answered at once, and waits
    /// return at once until it is cleared. Durable. Result: [`EventValue`].
    EventSet {
        /// Event name.
        event: String,
    },
    /// Clear an event (created on first use). Result: [`EventValue`].
    EventClear {
        /// Event name.
        event: String,
    },
    /// Whether an event is set (an event never used is clear). Result: [`EventValue`].
    EventGet {
        /// Event name.
        event: String,
    },
    /// Wait until the event is set (up to `timeout_ms`; forever if absent). Result:
    /// [`EventValue`], with `set: false` if the timeout passed first.
    EventWait {
        /// Event name.
        event: String,
        /// Wait at most this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Every event. Result: [`EventListResult`].
    EventList {},
    /// Forget an event; its waiters are answered `set: false`. Result: [`RemovedResult`].
    EventDelete {
        /// Event name.
        event: String,
    },

    /// Hold an anonymous session (created on first hold): the objects added to it with
    /// [`Op::AnonAdd`] are deleted by corrald once every holder is gone. Without `pid`,
    /// this connection holds it until it closes; with `pid`, that process holds it until
    /// it exits (corrald watches it with a pidfd), whatever becomes of this connection —
    /// so a program holds for itself and for each child it starts, and a `kill -9` of
    /// any of them ends its hold. Sessions and their process holders (pid and start time)
    /// are durable: after a restart of corrald the holders still alive hold on, and a
    /// session whose holders all died meanwhile ends at once; connection holders end with
    /// corrald. Result: [`AnonSession`].
    AnonHold {
        /// The session's token: unguessable, chosen by the program that makes it.
        session: String,
        /// The holding process (default: this connection).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
    /// Tie an object to a held session (`not_found` if nobody holds it). Result:
    /// [`AnonSession`].
    AnonAdd {
        /// The session's token.
        session: String,
        /// What the object is.
        kind: AnonKind,
        /// Its name.
        name: String,
    },

    /// The corrald nodes sharing this one's backend (`corrald --backend`), with their
    /// last heartbeat and what they hold. Result: [`NodesResult`].
    Nodes {},
}
}

/// What an operation needs from the `[access]` policy of `corral.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Looking only.
    Read,
    /// Changing a queue, counter, array or lock (the name decides with `[[access.names]]`).
    Use,
    /// Starting, stopping, running, reloading, shutting down; pool jobs.
    Control,
}

impl Need {
    /// The word for it in messages and in `corral.toml` (`read`, `use`, `control`).
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Read => "read",
            Need::Use => "use",
            Need::Control => "control",
        }
    }
}

/// Which state an operation works on, and so which part of corrald answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The handshake and the daemon itself (`hello`, `shutdown`).
    Daemon,
    /// Units and their instances (the supervisor).
    Units,
    /// Instance logs.
    Logs,
    /// Pool jobs (the pool manager).
    Pool,
    /// Queues (coordination state, the store).
    Queue,
    /// Counters (coordination state, the store).
    Counter,
    /// Numeric arrays (coordination state, the store).
    Array,
    /// Locks (coordination state, the store).
    Lock,
    /// Counting semaphores (coordination state, the store).
    Semaphore,
    /// Events (coordination state, the store).
    Event,
    /// Anonymous sessions: the lifetimes of unnamed objects (coordination state, the store).
    Anon,
}

impl Family {
    /// Whether this is coordination state (queues, counters, arrays, locks, semaphores,
    /// events, anonymous sessions), applied by
    /// the store in its batches, rather than units, logs, pools or the daemon.
    pub fn is_coordination(self) -> bool {
        matches!(
            self,
            Family::Queue
                | Family::Counter
                | Family::Array
                | Family::Lock
                | Family::Semaphore
                | Family::Event
                | Family::Anon
        )
    }
}

/// An operation described: see [`Op::spec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSpec<'a> {
    /// Which state it works on.
    pub family: Family,
    /// What it needs from the access policy.
    pub need: Need,
    /// The queue, counter, array or lock it changes, for `[[access.names]]` rules.
    pub name: Option<&'a str>,
}

const fn spec(family: Family, need: Need) -> OpSpec<'static> {
    OpSpec {
        family,
        need,
        name: None,
    }
}

fn uses(family: Family, name: &str) -> OpSpec<'_> {
    OpSpec {
        family,
        need: Need::Use,
        name: Some(name),
    }
}

impl Op {
    /// The one description of every operation: which state it works on (so who answers
    /// it: `Family::is_coordination` ones go to the store) and what the access policy
    /// asks of its client. A new operation adds its arm here, then its handler (in
    /// `handlers::dispatch`, or its family's module of `primitives` for coordination).
    pub fn spec(&self) -> OpSpec<'_> {
        use Family::*;
        use Need::*;
        match self {
            Op::Hello { .. } => spec(Daemon, Read),
            Op::Shutdown { plan: true, .. } => spec(Daemon, Read),
            Op::Shutdown { .. } => spec(Daemon, Control),

            Op::Status { .. } | Op::Timers {} | Op::Wait { .. } => spec(Units, Read),
            Op::Start { .. }
            | Op::Stop { .. }
            | Op::Restart { .. }
            | Op::Kill { .. }
            | Op::Reload {}
            | Op::Run { .. } => spec(Units, Control),
            Op::Logs { .. } => spec(Logs, Read),

            Op::PoolWait { .. }
            | Op::PoolStatus { .. }
            | Op::PoolResults { .. }
            | Op::PoolList {} => spec(Pool, Read),
            Op::PoolSubmit { .. }
            | Op::PoolAppend { .. }
            | Op::PoolClose { .. }
            | Op::PoolCancel { .. }
            | Op::PoolRemove { .. } => spec(Pool, Control),

            Op::QueueLen { .. } | Op::QueueList {} => spec(Queue, Read),
            Op::QueueDeclare { queue, .. }
            | Op::QueuePut { queue, .. }
            | Op::QueueGet { queue, .. }
            | Op::QueueAck { queue, .. }
            | Op::QueueNack { queue, .. }
            | Op::QueuePurge { queue }
            | Op::QueueDelete { queue } => uses(Queue, queue),

            Op::CounterGet { .. } | Op::CounterList {} => spec(Counter, Read),
            Op::CounterSet { counter, .. }
            | Op::CounterAdd { counter, .. }
            | Op::CounterCas { counter, .. }
            | Op::CounterDelete { counter } => uses(Counter, counter),

            Op::ArrayGet { .. } | Op::ArrayList {} => spec(Array, Read),
            Op::ArrayCreate { array, .. }
            | Op::ArraySet { array, .. }
            | Op::ArrayAdd { array, .. }
            | Op::ArrayDelete { array } => uses(Array, array),

            Op::LockStatus { .. } => spec(Lock, Read),
            Op::LockAcquire { lock, .. } | Op::LockRelease { lock } => uses(Lock, lock),

            Op::SemaphoreList {} => spec(Semaphore, Read),
            Op::SemaphoreGet { semaphore } => OpSpec {
                name: Some(semaphore),
                ..spec(Semaphore, Read)
            },
            Op::SemaphoreCreate { semaphore, .. }
            | Op::SemaphoreAcquire { semaphore, .. }
            | Op::SemaphoreRelease { semaphore }
            | Op::SemaphoreDelete { semaphore } => uses(Semaphore, semaphore),

            Op::EventList {} => spec(Event, Read),
            Op::EventGet { event } | Op::EventWait { event, .. } => OpSpec {
                name: Some(event),
                ..spec(Event, Read)
            },
            Op::EventSet { event } | Op::EventClear { event } | Op::EventDelete { event } => {
                uses(Event, event)
            }

            // Holding keeps a session's objects alive; adding one lets it be deleted with
            // the session, which needs the right to delete it.
            Op::AnonHold { .. } => spec(Anon, Use),
            Op::AnonAdd { name, .. } => uses(Anon, name),

            Op::Nodes {} => spec(Daemon, Read),
        }
    }

    /// Whether this operates on queues, counters, arrays or locks (the coordination
    /// state), rather than on units, logs, pools or the daemon.
    pub fn is_coordination(&self) -> bool {
        self.spec().family.is_coordination()
    }

    /// The wire name of the operation (`queue_put`, ...), as serde writes its tag.
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    }
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a shutdown would do, in order. Steps with the same `order` happen together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownPlan {
    /// The steps, by `order`.
    pub steps: Vec<PlanStep>,
}

/// One unit's part in a shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// 1 for daemon units and tasks (at once); 2, 3, … for services, in reverse
    /// dependency order (a service stops once nothing that depends on it is running).
    pub order: u32,
    /// Unit name.
    pub unit: String,
    /// Its instances that are running now.
    pub instances: Vec<u32>,
    /// `stop` (signal now), or `join` (wait up to `wait_ms` for it to finish, then stop).
    pub action: String,
    /// Wait before stopping (`join` only), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// Signal sent to each instance's process group.
    pub signal: String,
    /// Time between the signal and SIGKILL, ms.
    pub kill_after_ms: u64,
    /// Why it is in this step.
    pub reason: String,
}

/// A progress event of `shutdown` with `wait`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownProgress {
    /// Units with instances still running or stopping.
    pub waiting_for: Vec<String>,
}

/// Where a pool job is: on the wire, `running`, `finished` or `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Items are pending or running.
    Running,
    /// Every item is done (succeeded or failed).
    Finished,
    /// Stopped by `pool_cancel` (or its connection closing, with `cancel_on_disconnect`).
    Cancelled,
}

impl JobState {
    /// The wire name (`running`, `finished`, `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Its wire name read back (from the store); anything else is an unfinished job.
    pub fn parse(text: &str) -> JobState {
        match text {
            "finished" => JobState::Finished,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Running,
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pool job and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolJob {
    /// Job id.
    pub job: u64,
    /// Its name, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The command.
    pub command: Vec<String>,
    /// `exec` or `stream`.
    pub mode: String,
    /// Most items at once / worker processes.
    pub workers: usize,
    /// `running`, `finished` or `cancelled`.
    pub state: JobState,
    /// Open for more inputs ([`Op::PoolAppend`]) until closed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// Number of inputs.
    pub total: usize,
    /// Items that succeeded.
    pub succeeded: usize,
    /// Items that failed (after their retries).
    pub failed: usize,
    /// Items running now.
    pub running: usize,
    /// Items not started yet (or skipped, once cancelled).
    pub pending: usize,
    /// Submitted at, unix ms.
    pub created_ms: i64,
    /// Ended at, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    /// With a shared backend, in `pool_status`: each node's share of the job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<PoolNodeShare>,
}

/// One node's share of a pool job run across nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolNodeShare {
    /// The node's name.
    pub node: String,
    /// Items it runs now.
    pub running: usize,
    /// Items it ran that succeeded.
    pub succeeded: usize,
    /// Items it ran that failed.
    pub failed: usize,
}

/// One item's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolItem {
    /// Position in the inputs, from 0.
    pub index: usize,
    /// The input.
    pub input: String,
    /// Whether it succeeded (exit 0; in stream mode, an answer line).
    pub ok: bool,
    /// How its process ended (exec mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// Its standard output (exec), or its answer line without the newline (stream).
    pub stdout: String,
    /// Its standard error (exec mode).
    pub stderr: String,
    /// Why it failed, when it did not simply exit non-zero (timeout, exec error, worker died).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Output past the per-item cap was cut (and the cut is marked in the text).
    #[serde(default)]
    pub truncated: bool,
    /// Attempts made.
    pub attempts: u32,
    /// Started at (last attempt), unix ms.
    pub started_ms: i64,
    /// Ended at, unix ms.
    pub ended_ms: i64,
    /// The node that ran it, with a shared backend (`corrald --backend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Result of [`Op::PoolAppend`]: where the appended inputs are in the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolBatch {
    /// Job id.
    pub job: u64,
    /// Index of the first appended input.
    pub first: usize,
    /// Number of inputs appended.
    pub count: usize,
}

/// Result of [`Op::PoolResults`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolResults {
    /// The job.
    pub job: PoolJob,
    /// Finished items, in input order.
    pub items: Vec<PoolItem>,
}

/// Result of [`Op::PoolList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolListResult {
    /// Jobs, oldest first.
    pub jobs: Vec<PoolJob>,
}

/// Element type of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArrayKind {
    /// 64-bit signed integers.
    I64,
    /// 64-bit floats.
    F64,
}

/// Result of [`Op::QueuePut`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePutResult {
    /// Items in the queue after this put.
    pub depth: usize,
}

/// Result of [`Op::QueueGet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueGetResult {
    /// The items, oldest first.
    pub items: Vec<Value>,
    /// With `ack`: the lease of each item, in the same order as `items`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<Lease>,
}

/// How long a lease of an acknowledged get lasts unless the get says otherwise.
pub const DEFAULT_VISIBILITY_MS: u64 = 30_000;

/// The lease on one item handed out by an acknowledged get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Names the lease in [`Op::QueueAck`] and [`Op::QueueNack`]; never reused, also
    /// across restarts of corrald.
    pub id: u64,
    /// How many times the item has been delivered by acknowledged gets, this one
    /// included: 2 or more means an earlier consumer did not ack it.
    pub deliveries: u32,
}

/// Result of [`Op::QueueAck`] and [`Op::QueueNack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAckResult {
    /// Leases ended (every id given).
    pub count: usize,
}

/// One queue, as in [`Op::QueueList`], [`Op::QueueLen`] and [`Op::QueueDeclare`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// Queue name.
    pub queue: String,
    /// Items waiting.
    pub depth: usize,
    /// Items handed out by acknowledged gets and not yet acked (still stored).
    #[serde(default)]
    pub in_flight: usize,
    /// Capacity, if bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxsize: Option<usize>,
    /// Deliveries after which an unacked item goes to `dead_letter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliveries: Option<u32>,
    /// The dead-letter queue (set with `max_deliveries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// Items ever put.
    pub put_total: u64,
    /// Items ever taken (by a plain get, or acked).
    pub got_total: u64,
    /// Clients blocked in `get`.
    pub waiting_getters: usize,
    /// Clients blocked in `put` on a full queue.
    pub waiting_putters: usize,
}

/// Result of [`Op::QueueList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueListResult {
    /// Queues by name.
    pub queues: Vec<QueueInfo>,
}

/// How many things a purge or delete removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedResult {
    /// Items (purge) or objects (delete: 0 or 1) removed.
    pub removed: usize,
}

/// A counter and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterValue {
    /// Counter name.
    pub counter: String,
    /// Current value.
    pub value: i64,
}

/// Result of [`Op::CounterCas`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasResult {
    /// Counter name.
    pub counter: String,
    /// Whether the value was replaced.
    pub swapped: bool,
    /// The value now.
    pub value: i64,
}

/// Result of [`Op::CounterList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterListResult {
    /// Counters by name.
    pub counters: Vec<CounterValue>,
}

/// An array, or a slice of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayValue {
    /// Array name.
    pub array: String,
    /// Element type.
    pub kind: ArrayKind,
    /// The elements, from `offset` (at most [`MAX_ARRAY_SLICE`]; the reply to
    /// `array_create` carries the first slice of a longer array).
    pub values: Vec<serde_json::Number>,
    /// Index of the first element in `values`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: usize,
    /// Number of elements of the whole array.
    #[serde(default)]
    pub length: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One array element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayItem {
    /// Array name.
    pub array: String,
    /// Element index.
    pub index: usize,
    /// Its value.
    pub value: serde_json::Number,
}

/// One array in [`ArrayListResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayInfo {
    /// Array name.
    pub array: String,
    /// Element type.
    pub kind: ArrayKind,
    /// Number of elements.
    pub length: usize,
}

/// Result of [`Op::ArrayList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayListResult {
    /// Arrays by name.
    pub arrays: Vec<ArrayInfo>,
}

/// Result of [`Op::LockAcquire`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockGrant {
    /// Lock name.
    pub lock: String,
    /// Fencing token: larger than every token granted before, for any lock, even across
    /// restarts of corrald. Pass it to the resource the lock protects so it can refuse a
    /// stale holder.
    pub token: u64,
}

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Pid of the holding client (from the kernel, `SO_PEERCRED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Uid of the holding client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Unit of the holder, if it is (a descendant of) a supervised instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Instance number, with `unit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    /// When it was granted, unix ms.
    pub since_ms: i64,
    /// How long it has been held, ms.
    pub held_ms: u64,
    /// The grant's fencing token.
    pub token: u64,
    /// The node whose client holds it, with a shared backend (`corrald --backend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One lock in [`LockStatusResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Lock name.
    pub lock: String,
    /// The holder, if held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<LockHolder>,
    /// Clients waiting.
    pub waiters: usize,
}

/// Result of [`Op::Nodes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodesResult {
    /// The shared backend's URL, password hidden; `None`: this corrald keeps its
    /// queues, counters and locks to itself (SQLite) and `nodes` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// This node's name, with a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Every node registered in the backend, by name.
    pub nodes: Vec<NodeInfo>,
}

/// One node of [`NodesResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node name (`corrald --node`).
    pub node: String,
    /// When it last started, unix ms.
    pub started_ms: i64,
    /// Its last heartbeat, unix ms (the database's clock).
    pub heartbeat_ms: i64,
    /// How long ago that was, ms.
    pub heartbeat_age_ms: u64,
    /// Its lease: past this without a heartbeat, its locks are released.
    pub lease_ms: u64,
    /// Whether its lease is current.
    pub alive: bool,
    /// The locks its clients hold.
    pub locks: Vec<String>,
    /// How many of its clients wait for a lock.
    pub lock_waiters: usize,
}

/// Result of [`Op::LockStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockStatusResult {
    /// Locks by name (held or waited for).
    pub locks: Vec<LockInfo>,
}

/// Result of the semaphore operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemaphoreValue {
    /// Semaphore name.
    pub semaphore: String,
    /// Free permits.
    pub value: u64,
    /// Most free permits, for a bounded semaphore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<u64>,
    /// Clients waiting to acquire.
    #[serde(default)]
    pub waiters: usize,
}

/// Result of [`Op::SemaphoreList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemaphoreListResult {
    /// Semaphores by name.
    pub semaphores: Vec<SemaphoreValue>,
}

/// Result of the event operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventValue {
    /// Event name.
    pub event: String,
    /// Whether it is set.
    pub set: bool,
    /// Clients waiting for it.
    #[serde(default)]
    pub waiters: usize,
}

/// Result of [`Op::EventList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventListResult {
    /// Events by name.
    pub events: Vec<EventValue>,
}

/// The kind of an object tied to an anonymous session ([`Op::AnonAdd`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnonKind {
    /// A queue.
    Queue,
    /// A counter.
    Counter,
    /// An array.
    Array,
    /// A semaphore.
    Semaphore,
    /// An event.
    Event,
}

/// Result of [`Op::AnonHold`] and [`Op::AnonAdd`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnonSession {
    /// The session's token.
    pub session: String,
    /// Connections and processes holding it now.
    pub holders: usize,
    /// Objects tied to it.
    pub objects: usize,
}

fn default_kill_signal() -> String {
    "SIGKILL".into()
}

fn default_log_lines() -> usize {
    10
}

/// One reply line. Exactly one of `result`, `error` and `event` is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The id of the request this answers (0 when the request could not be parsed).
    pub id: u64,
    /// The operation's outcome on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// An intermediate item of a streaming operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Value>,
}

impl Response {
    /// A success reply.
    pub fn ok(id: u64, result: impl Serialize) -> Response {
        Response {
            id,
            result: Some(to_value(result)),
            error: None,
            event: None,
        }
    }

    /// A failure reply.
    pub fn err(id: u64, error: ErrorBody) -> Response {
        Response {
            id,
            result: None,
            error: Some(error),
            event: None,
        }
    }

    /// A streamed item.
    pub fn event(id: u64, event: impl Serialize) -> Response {
        Response {
            id,
            result: None,
            error: None,
            event: Some(to_value(event)),
        }
    }

    /// This reply as one frame: JSON and a trailing newline.
    pub fn to_frame(&self) -> Vec<u8> {
        to_frame(self)
    }
}

/// The frame of a success reply, serialized straight from `result`: what
/// `Response::ok(id, result).to_frame()` says, without building the intermediate
/// `serde_json::Value` (the daemon's hot path).
pub fn ok_frame(id: u64, result: &impl Serialize) -> Vec<u8> {
    to_frame(&Parts {
        id,
        result: Some(result),
        error: None,
        event: None,
    })
}

/// The frame of a failure reply: what `Response::err(id, error).to_frame()` says.
pub fn err_frame(id: u64, error: &ErrorBody) -> Vec<u8> {
    to_frame(&Parts::<()> {
        id,
        result: None,
        error: Some(error),
        event: None,
    })
}

/// The frame of a streamed item: what `Response::event(id, event).to_frame()` says,
/// without the intermediate `serde_json::Value`.
pub fn event_frame(id: u64, event: &impl Serialize) -> Vec<u8> {
    to_frame(&Parts {
        id,
        result: None,
        error: None,
        event: Some(event),
    })
}

/// A [`Response`] by reference, for the `*_frame` functions.
#[derive(Serialize)]
struct Parts<'a, T: Serialize> {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ErrorBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a T>,
}

/// Serializes a message as one frame (JSON plus `\n`).
pub fn to_frame(message: &impl Serialize) -> Vec<u8> {
    // Serializing our own types to a Vec cannot fail: no maps with non-string keys.
    let mut frame = Vec::with_capacity(128);
    serde_json::to_writer(&mut frame, message).expect("protocol types serialize");
    frame.push(b'\n');
    frame
}

fn to_value(value: impl Serialize) -> Value {
    serde_json::to_value(value).expect("protocol types serialize")
}

/// What went wrong, in a form a program can branch on and a person can read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable category.
    pub code: ErrorCode,
    /// Human-readable explanation, saying what to do where possible.
    pub message: String,
    /// Further lines (e.g. every error of a rejected unit file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ErrorBody {
    /// An error with no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for line in &self.details {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// Error categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not a valid request (bad JSON, wrong shape, bad argument).
    BadRequest,
    /// The `op` is not one this daemon knows.
    UnknownOp,
    /// The frame exceeded the size limit.
    FrameTooLarge,
    /// The client's protocol version is not supported.
    UnsupportedVersion,
    /// No such unit (or other named object).
    NotFound,
    /// Unit files failed validation.
    InvalidConfig,
    /// The operation was valid but could not be carried out.
    Failed,
    /// A deadline passed.
    Timeout,
    /// corrald is shutting down and takes no new work.
    ShuttingDown,
    /// The client may not do this.
    PermissionDenied,
    /// The connection limit is reached.
    Busy,
    /// A bug or an unexpected system error in corrald.
    Internal,
    /// The queue is empty (non-blocking get, or a get whose timeout passed).
    Empty,
    /// The queue is at its `maxsize` (non-blocking put, or a put whose timeout passed).
    Full,
    /// The lock is held by another client (non-blocking acquire).
    Locked,
    /// Releasing a lock this connection does not hold.
    NotHeld,
    /// An arithmetic result does not fit (i64 overflow, non-finite float).
    Overflow,
    /// An array index past the end.
    OutOfRange,
    /// A value of the wrong type (a float for an i64 array, another shape for an existing array).
    TypeMismatch,
    /// A value (e.g. a queue item) over its size limit.
    TooLarge,
    /// Durable storage refused the write (e.g. the disk is full); nothing changed.
    StorageFull,
    /// The shared backend (PostgreSQL, `corrald --backend`) cannot be reached; nothing
    /// changed. corrald reconnects by itself: retry later.
    BackendUnavailable,
}

/// Result of [`Op::Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloResult {
    /// The daemon's [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The daemon's name and version, e.g. `corrald 0.1.0`.
    pub server: String,
    /// The daemon's pid.
    pub pid: u32,
}

/// Life-cycle state of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Never started (e.g. a task that has not been started yet).
    Inactive,
    /// Asked to start; waiting for its dependencies, being spawned, or (for a unit with a
    /// `[ready]` check) spawned, with a pid, until the check passes.
    Starting,
    /// Its process is alive.
    Running,
    /// Waiting out the restart delay before the next start.
    Backoff,
    /// The stop signal was sent; waiting for the process group to go.
    Stopping,
    /// Stopped on request.
    Stopped,
    /// Ran and exited, and is not due to run again.
    Exited,
    /// Could not be started, or hit the start limit; stays down until started again.
    Failed,
}

impl InstanceState {
    /// Every state, in the order `status` and the metrics list them.
    pub const ALL: [InstanceState; 8] = [
        InstanceState::Inactive,
        InstanceState::Starting,
        InstanceState::Running,
        InstanceState::Backoff,
        InstanceState::Stopping,
        InstanceState::Stopped,
        InstanceState::Exited,
        InstanceState::Failed,
    ];
    /// Whether the instance is running or due to run (the opposite of "settled").
    pub fn is_active(self) -> bool {
        matches!(
            self,
            InstanceState::Starting
                | InstanceState::Running
                | InstanceState::Backoff
                | InstanceState::Stopping
        )
    }

    /// The name used on the wire and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Inactive => "inactive",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Backoff => "backoff",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Exited => "exited",
            InstanceState::Failed => "failed",
        }
    }
}

/// How a process ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, if it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Signal number, if a signal killed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit {code}"),
            (None, Some(sig)) => write!(f, "signal {sig}"),
            (None, None) => f.write_str("unknown"),
        }
    }
}

/// Result of [`Op::Status`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResult {
    /// Units in name order.
    pub units: Vec<UnitStatus>,
    /// How corrald tracks and stops instances: in cgroups of their own (where a
    /// writable cgroup v2 hierarchy exists) or by process group, with the reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub supervision: String,
}

/// Result of [`Op::Timers`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimersResult {
    /// Scheduled units in name order.
    pub timers: Vec<TimerStatus>,
}

/// One scheduled unit in [`TimersResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerStatus {
    /// Unit name.
    pub unit: String,
    /// The cron pattern, or `every DURATION`.
    pub schedule: String,
    /// `skip`, `queue` or `allow`.
    pub overlap: String,
    /// Whether a run missed while corrald was down is run at start.
    pub catch_up: bool,
    /// When the schedule last started a run (unix ms; from the stored runs after a
    /// restart of corrald).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_ms: Option<u64>,
    /// When it runs next (unix ms); absent for a pattern that never matches again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_ms: Option<u64>,
    /// A run waits for the current one to finish (`overlap = "queue"`).
    pub queued: bool,
}

/// One unit in [`StatusResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStatus {
    /// Unit name.
    pub name: String,
    /// `service` or `task`.
    pub kind: String,
    /// Whether the unit dies with corrald.
    pub daemon: bool,
    /// Created by `run` rather than from a file.
    pub transient: bool,
    /// False for a unit file that corrald set aside at start for its errors (see
    /// `errors`): such a unit has no instances and cannot be started until a `reload`
    /// of a corrected set. Absent (true) from daemons older than this field.
    #[serde(default = "yes")]
    pub loaded: bool,
    /// Why the unit is not loaded: each error as `file:line:column: message`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// For a transient unit started with `run`'s `parent`: the program that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<RunParent>,
    /// Its instances, by number.
    pub instances: Vec<InstanceStatus>,
}

/// One instance in [`UnitStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// Instance number, from 0.
    pub instance: u32,
    /// Current state.
    pub state: InstanceState,
    /// Pid of the running process (also its process-group id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Milliseconds the current process has been running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Restarts by policy since the last explicit start.
    pub restarts: u32,
    /// How the last run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ExitStatus>,
    /// Why the instance is in this state (e.g. the exec error of a failed start), or why
    /// it was last restarted by corrald (a failed readiness or health check, `max_memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the current run has passed the unit's `[ready]` check; absent when the
    /// unit has none (it is ready once spawned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// The outcome of the last `[health]` probe; absent without `[health]` or before the
    /// first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Failed health probes in a row.
    #[serde(default)]
    pub health_failures: u32,
    /// Failed health probes since corrald started.
    #[serde(default)]
    pub health_failures_total: u64,
    /// Why the last readiness or health probe failed, while it is the latest outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_error: Option<String>,
    /// CPU time used by everything in the instance's cgroup (µs), in cgroup mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_usec: Option<u64>,
    /// Memory charged to the instance's cgroup (bytes), where a memory controller
    /// accounts for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_bytes: Option<u64>,
}

/// Result of [`Op::Start`], [`Op::Stop`] and [`Op::Restart`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitsResult {
    /// The units acted on (including pulled-in requirements for `start`).
    pub units: Vec<String>,
}

/// Result of [`Op::Wait`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitResult {
    /// Unit name.
    pub unit: String,
    /// Final state of every instance.
    pub instances: Vec<InstanceExit>,
}

impl WaitResult {
    /// Every instance exited with code 0.
    pub fn success(&self) -> bool {
        self.instances
            .iter()
            .all(|i| i.exit.is_some_and(|e| e.success()))
    }
}

/// One instance in [`WaitResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceExit {
    /// Instance number.
    pub instance: u32,
    /// State after waiting (`exited`, `failed`, `stopped` or `inactive`).
    pub state: InstanceState,
    /// How its last run ended, if it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// Why it failed, when it did (e.g. the command could not be started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Result of [`Op::Logs`] without `follow` (with `follow`, the lines arrive as events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsResult {
    /// The lines, oldest first, each tagged with its instance.
    pub lines: Vec<LogLine>,
}

/// One line of an instance's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Instance number.
    pub instance: u32,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub line: String,
}

/// Result of [`Op::Reload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadResult {
    /// New units (started if `autostart`).
    pub added: Vec<String>,
    /// Units whose file is gone (stopped and forgotten).
    pub removed: Vec<String>,
    /// Units whose definition changed (restarted if they were running).
    pub changed: Vec<String>,
    /// Units left as they were.
    pub unchanged: Vec<String>,
}

/// The program a transient unit was started for ([`Op::Run`]'s `parent`, and
/// [`UnitStatus::parent`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunParent {
    /// Its pid. In `run`, absent means the process that sent the request (its
    /// `SO_PEERCRED` pid); in `status` it is always there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// What to call it, e.g. its command line (at most [`MAX_PARENT_LABEL`] bytes).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
}

/// The longest [`RunParent::label`] `run` accepts, in bytes.
pub const MAX_PARENT_LABEL: usize = 1024;

/// Result of [`Op::Run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Name of the transient unit.
    pub unit: String,
    /// Without `wait`: the pid of the started process (also its process group), once it
    /// runs; absent if it could not be started (see `status` for the reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// With `wait`: how the process ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(text: &str) -> Op {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn each_op_is_described_once_by_its_spec() {
        let put = op(r#"{"op":"queue_put","queue":"jobs","value":1}"#);
        assert_eq!(put.name(), "queue_put");
        assert_eq!(
            put.spec(),
            OpSpec {
                family: Family::Queue,
                need: Need::Use,
                name: Some("jobs")
            }
        );
        assert!(put.is_coordination());
        let plan = op(r#"{"op":"shutdown","plan":true}"#);
        assert_eq!(plan.spec().need, Need::Read);
        assert_eq!(op(r#"{"op":"shutdown"}"#).spec().need, Need::Control);
        let submit = op(r#"{"op":"pool_submit","command":["true"],"inputs":[]}"#);
        assert_eq!(
            (submit.spec().family, submit.spec().need),
            (Family::Pool, Need::Control)
        );
        assert!(!submit.is_coordination());
        assert_eq!(op(r#"{"op":"lock_status"}"#).spec().family, Family::Lock);
    }

    #[test]
    fn request_round_trips_with_flattened_op() {
        let text = r#"{"id":7,"op":"start","units":["web"]}"#;
        let req: Request = serde_json::from_str(text).unwrap();
        assert_eq!(
            req,
            Request {
                id: 7,
                op: Op::Start {
                    units: vec!["web".into()],
                    wait: false,
                    timeout_ms: None,
                }
            }
        );
        let back = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&back).unwrap(), req);
    }

    #[test]
    fn unknown_op_is_an_error() {
        assert!(serde_json::from_str::<Request>(r#"{"id":1,"op":"frobnicate"}"#).is_err());
    }

    #[test]
    fn defaults_apply() {
        let req: Request = serde_json::from_str(r#"{"id":1,"op":"logs","unit":"a"}"#).unwrap();
        assert_eq!(
            req.op,
            Op::Logs {
                unit: "a".into(),
                instance: None,
                lines: 10,
                follow: false
            }
        );
    }

    #[test]
    fn response_frames_end_in_newline_and_omit_empty_fields() {
        let frame = Response::ok(
            3,
            HelloResult {
                protocol: 1,
                server: "corrald".into(),
                pid: 1,
            },
        )
        .to_frame();
        let text = std::str::from_utf8(&frame).unwrap();
        assert!(text.ends_with('\n'));
        assert!(!text.contains("error"));
        assert!(text.starts_with(r#"{"id":3,"result":"#));
    }
}
