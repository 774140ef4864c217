//! [`Client`]: one blocking connection to corrald.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_proto::{
    ArrayInfo, ArrayListResult, CounterListResult, CounterValue, HelloResult, LockInfo,
    LockStatusResult, LogLine, LogsResult, NodesResult, Op, PROTOCOL_VERSION, QueueInfo,
    QueueListResult, ReloadResult, Request, Response, RunResult, StatusResult, UnitsResult,
    WaitResult,
};
use serde::de::DeserializeOwned;

use crate::{Array, Counter, Error, Lock, Queue};

/// One connection to corrald.
///
/// Every method takes `&self`: the connection state lives in a [`RefCell`], so typed
/// handles ([`Queue`], [`Counter`], [`Array`], [`Lock`] and its [`LockGuard`]s) can
/// borrow the client side by side. Calls are still one at a time: each sends its request
/// and reads until its reply has arrived.
///
/// A `Client` is `Send` but deliberately not `Sync`: use **one client per thread**
/// (connecting costs one round trip). Locks belong to the connection that took them, so
/// they are released when the client is dropped, even without [`LockGuard::release`].
///
/// ```no_run
/// use corral_client::Client;
///
/// let client = Client::connect()?;
/// let results = client.queue("results");
/// let workers = client.counter("workers");
/// workers.add(1)?;
/// results.put(42)?;
/// workers.add(-1)?;
/// # Ok::<(), corral_client::Error>(())
/// ```
///
/// Not `Sync`:
///
/// ```compile_fail
/// fn shared<T: Sync>() {}
/// shared::<corral_client::Client>();
/// ```
///
/// [`LockGuard`]: crate::LockGuard
/// [`LockGuard::release`]: crate::LockGuard::release
pub struct Client {
    socket: PathBuf,
    /// The connection and the request ids; its borrow also makes each call exclusive.
    conn: RefCell<Conn>,
}

struct Conn {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
    line: String,
    /// Set by an I/O error: a half-written request or a half-read reply leaves the stream
    /// out of step, so the connection must not be used again.
    broken: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to [`default_socket`](crate::default_socket) and exchanges `hello`.
    ///
    /// ```no_run
    /// let client = corral_client::Client::connect()?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn connect() -> Result<Client, Error> {
        Client::connect_to(crate::default_socket())
    }

    /// Connects to the socket at `path` and exchanges `hello`.
    ///
    /// ```no_run
    /// let client = corral_client::Client::connect_to("/run/corral/corral.sock")?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn connect_to(path: impl Into<PathBuf>) -> Result<Client, Error> {
        let socket = path.into();
        let client = Client {
            conn: RefCell::new(Conn::open(&socket)?),
            socket,
        };
        let _: HelloResult = client.call(hello())?;
        Ok(client)
    }

    /// The socket this client is connected to.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// println!("connected to {}", client.socket().display());
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `op` and returns its result, decoded as `T`: the way to any operation that
    /// has no typed method.
    ///
    /// ```no_run
    /// use corral_client::proto::{Op, StatusResult};
    ///
    /// # let client = corral_client::Client::connect()?;
    /// let status: StatusResult = client.call(Op::Status { unit: None })?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// Like [`call_streaming`](Client::call_streaming), when called from inside a
    /// `call_streaming` callback of the same client.
    pub fn call<T: DeserializeOwned>(&self, op: Op) -> Result<T, Error> {
        self.call_streaming(op, |_| {})
    }

    /// Sends `op`, handing each streamed event to `on_event`, and returns the final result.
    ///
    /// ```no_run
    /// use corral_client::proto::{LogLine, LogsResult, Op};
    ///
    /// # let client = corral_client::Client::connect()?;
    /// let op = Op::Logs { unit: "web".into(), instance: None, lines: 10, follow: true };
    /// let _: LogsResult = client.call_streaming(op, |event| {
    ///     if let Ok(line) = serde_json::from_value::<LogLine>(event) {
    ///         println!("{}", line.line);
    ///     }
    /// })?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// When `on_event` uses this same client: the connection is busy with this call until
    /// it returns. Use a second client for that.
    pub fn call_streaming<T: DeserializeOwned>(
        &self,
        op: Op,
        mut on_event: impl FnMut(serde_json::Value),
    ) -> Result<T, Error> {
        let Ok(mut conn) = self.conn.try_borrow_mut() else {
            panic!(
                "corral_client::Client used from inside one of its own call_streaming callbacks; use another Client"
            );
        };
        conn.usable()?;
        let id = conn.next_id;
        conn.next_id += 1;
        let frame = corral_proto::to_frame(&Request { id, op });
        if let Err(e) = conn.writer.write_all(&frame) {
            // corrald closes a connection that held nothing for its `idle_timeout`; if
            // it did, nothing of this request was taken: say hello on a new connection
            // and send it there.
            if !self.reconnect_after(&e, &mut conn) {
                conn.broken = true;
                return Err(Error::Io(e));
            }
            if let Err(e) = conn.writer.write_all(&frame) {
                conn.broken = true;
                return Err(Error::Io(e));
            }
        }
        loop {
            let response = conn.read_response()?;
            if response.id == 0 && response.error.is_some() {
                // About the connection or a request corrald could not read (`busy`,
                // `frame_too_large`): it is this call's answer.
            } else if response.id != id {
                // A reply to an earlier request abandoned by its caller: skip it.
                continue;
            }
            if let Some(error) = response.error {
                return Err(Error::Server(error));
            }
            if let Some(event) = response.event {
                on_event(event);
                continue;
            }
            let result = response
                .result
                .ok_or_else(|| Error::Protocol("reply without result or error".into()))?;
            return serde_json::from_value(result).map_err(|e| Error::Protocol(e.to_string()));
        }
    }

    /// After a failed first write: whether corrald had closed the connection (a broken
    /// pipe, so nothing was sent) and a new one, greeted with `hello`, now replaces it.
    fn reconnect_after(&self, e: &std::io::Error, conn: &mut Conn) -> bool {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return false;
        }
        let Ok(mut fresh) = Conn::open(&self.socket) else {
            return false;
        };
        let greeting = corral_proto::to_frame(&Request { id: 0, op: hello() });
        if fresh.writer.write_all(&greeting).is_err() {
            return false;
        }
        match fresh.read_response() {
            Ok(r) if r.result.is_some() => {}
            _ => return false,
        }
        fresh.next_id = conn.next_id;
        *conn = fresh;
        true
    }

    /// [`call`](Client::call), or `None` without sending anything when the client is in
    /// the middle of another call (for `Drop` impls, which must not panic).
    pub(crate) fn call_if_idle<T: DeserializeOwned>(&self, op: Op) -> Option<Result<T, Error>> {
        if self.conn.try_borrow_mut().is_err() {
            return None;
        }
        Some(self.call(op))
    }

    /// Waits until corrald closes this connection (e.g. after `shutdown`).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.shutdown()?;
    /// client.wait_closed()?;
    /// println!("corrald stopped");
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn wait_closed(&self) -> Result<(), Error> {
        let mut conn = self.conn.borrow_mut();
        if conn.broken {
            return Ok(());
        }
        let conn = &mut *conn;
        loop {
            conn.line.clear();
            match conn.reader.read_line(&mut conn.line) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {} // not UTF-8: skip
                Err(e) => {
                    conn.broken = true;
                    return Err(Error::Io(e));
                }
            }
        }
    }

    /// Status of every unit, or of one.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// for unit in client.status(Some("web"))?.units {
    ///     println!("{}: {} instance(s)", unit.name, unit.instances.len());
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn status(&self, unit: Option<&str>) -> Result<StatusResult, Error> {
        self.call(Op::Status {
            unit: unit.map(str::to_owned),
        })
    }

    /// Starts units (and what they require).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let started = client.start(&["web", "worker"])?;
    /// println!("started {}", started.units.join(" "));
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn start(&self, units: &[&str]) -> Result<UnitsResult, Error> {
        self.call(Op::Start {
            units: owned(units),
            wait: false,
            timeout_ms: None,
        })
    }

    /// Starts units and returns once every instance of them has started (a service has
    /// run for corrald's 1 s start window; a task has, or has exited with code 0), like
    /// `systemctl start`. An instance that fails first gives a `failed` error naming it
    /// and why, with the last lines of its log in the error's `details`; after
    /// `timeout`, a `timeout` error (the units go on starting).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.start_and_wait(&["web"], Some(std::time::Duration::from_secs(30)))?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn start_and_wait(
        &self,
        units: &[&str],
        timeout: Option<Duration>,
    ) -> Result<UnitsResult, Error> {
        self.call(Op::Start {
            units: owned(units),
            wait: true,
            timeout_ms: timeout_ms(timeout),
        })
    }

    /// Stops units; returns once they are down.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.stop(&["web"])?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn stop(&self, units: &[&str]) -> Result<UnitsResult, Error> {
        self.call(Op::Stop {
            units: owned(units),
        })
    }

    /// Restarts units.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.restart(&["web"])?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn restart(&self, units: &[&str]) -> Result<UnitsResult, Error> {
        self.call(Op::Restart {
            units: owned(units),
            wait: false,
            timeout_ms: None,
        })
    }

    /// Restarts units and returns once they have started again, or failed to: see
    /// [`Client::start_and_wait`].
    pub fn restart_and_wait(
        &self,
        units: &[&str],
        timeout: Option<Duration>,
    ) -> Result<UnitsResult, Error> {
        self.call(Op::Restart {
            units: owned(units),
            wait: true,
            timeout_ms: timeout_ms(timeout),
        })
    }

    /// Blocks until nothing of `unit` is running or due to run (like `Process.join()`),
    /// at most `timeout_ms` milliseconds if given (then a `timeout` error).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.start(&["task"])?;
    /// let result = client.wait("task", Some(60_000))?;
    /// assert!(result.success());
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn wait(&self, unit: &str, timeout_ms: Option<u64>) -> Result<WaitResult, Error> {
        self.call(Op::Wait {
            unit: unit.to_owned(),
            timeout_ms,
        })
    }

    /// The last `lines` lines of each instance's log.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// for line in client.logs("web", None, 20)? {
    ///     println!("[{}] {}", line.instance, line.line);
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn logs(
        &self,
        unit: &str,
        instance: Option<u32>,
        lines: usize,
    ) -> Result<Vec<LogLine>, Error> {
        let result: LogsResult = self.call(Op::Logs {
            unit: unit.to_owned(),
            instance,
            lines,
            follow: false,
        })?;
        Ok(result.lines)
    }

    /// Re-reads the unit files.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let reload = client.reload()?;
    /// println!("added: {:?}", reload.added);
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn reload(&self) -> Result<ReloadResult, Error> {
        self.call(Op::Reload {})
    }

    /// Starts a transient task running `command`; returns its unit name.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let run = client.run(Some("backup"), &["tar", "czf", "/tmp/etc.tgz", "/etc"])?;
    /// client.wait(&run.unit, None)?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn run(&self, name: Option<&str>, command: &[&str]) -> Result<RunResult, Error> {
        self.call(Op::Run {
            name: name.map(str::to_owned),
            command: owned(command),
            env: Default::default(),
            working_dir: None,
            wait: false,
            daemon: false,
            stdio_fds: false,
            stop_on_disconnect: false,
            parent: None,
            anon_session: None,
        })
    }

    /// Asks corrald to shut down by its lifecycle rules.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// client.shutdown()?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn shutdown(&self) -> Result<(), Error> {
        let _: serde_json::Value = self.call(Op::Shutdown {
            plan: false,
            wait: false,
        })?;
        Ok(())
    }

    /// A handle on the queue `name` (created by its first `put` or `declare`).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let q = client.queue("jobs");
    /// q.put("Data from process")?;
    /// let item: String = q.get(None)?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn queue(&self, name: impl Into<String>) -> Queue<'_> {
        Queue::new(self, name.into())
    }

    /// Every queue, by name.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// for q in client.queues()? {
    ///     println!("{}: {} item(s)", q.queue, q.depth);
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn queues(&self) -> Result<Vec<QueueInfo>, Error> {
        let result: QueueListResult = self.call(Op::QueueList {})?;
        Ok(result.queues)
    }

    /// The corrald nodes sharing this one's backend (`corrald --backend`), with their
    /// heartbeats and the locks they hold; without a backend, `backend` is `None` and
    /// there are no nodes.
    pub fn nodes(&self) -> Result<NodesResult, Error> {
        self.call(Op::Nodes {})
    }

    /// A handle on the counter `name` (0 until first set).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let hits = client.counter("hits");
    /// let now = hits.add(1)?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn counter(&self, name: impl Into<String>) -> Counter<'_> {
        Counter::new(self, name.into())
    }

    /// Every counter, by name.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// for c in client.counters()? {
    ///     println!("{} = {}", c.counter, c.value);
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn counters(&self) -> Result<Vec<CounterValue>, Error> {
        let result: CounterListResult = self.call(Op::CounterList {})?;
        Ok(result.counters)
    }

    /// A handle on the array `name` (create it with [`Array::create_i64`] or
    /// [`Array::create_f64`]).
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let totals = client.array("totals");
    /// totals.create_i64(4, None)?;
    /// totals.add_i64(2, 10)?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn array(&self, name: impl Into<String>) -> Array<'_> {
        Array::new(self, name.into())
    }

    /// Every array, by name.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// for a in client.arrays()? {
    ///     println!("{}: {:?}[{}]", a.array, a.kind, a.length);
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn arrays(&self) -> Result<Vec<ArrayInfo>, Error> {
        let result: ArrayListResult = self.call(Op::ArrayList {})?;
        Ok(result.arrays)
    }

    /// A handle on the lock `name`.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// let guard = client.lock("db-migrations").acquire(None)?;
    /// // ... exclusive work, passing guard.token() to the protected resource ...
    /// guard.release()?;
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn lock(&self, name: impl Into<String>) -> Lock<'_> {
        Lock::new(self, name.into())
    }

    /// Every lock that is held or waited for, by name.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// for l in client.locks()? {
    ///     let holder = l.holder.and_then(|h| h.pid);
    ///     println!("{}: held by {holder:?}, {} waiting", l.lock, l.waiters);
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn locks(&self) -> Result<Vec<LockInfo>, Error> {
        let result: LockStatusResult = self.call(Op::LockStatus { lock: None })?;
        Ok(result.locks)
    }
}

impl Conn {
    /// A new connection to `socket`, not yet greeted.
    fn open(socket: &Path) -> Result<Conn, Error> {
        let writer = UnixStream::connect(socket).map_err(|source| Error::Connect {
            socket: socket.to_owned(),
            source,
        })?;
        Ok(Conn {
            reader: BufReader::new(writer.try_clone()?),
            writer,
            next_id: 1,
            line: String::new(),
            broken: false,
        })
    }

    fn usable(&self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "an earlier I/O error broke this connection; connect again",
            )));
        }
        Ok(())
    }

    fn read_response(&mut self) -> Result<Response, Error> {
        self.line.clear();
        let n = match self.reader.read_line(&mut self.line) {
            Ok(n) => n,
            Err(e) => {
                self.broken = true;
                return Err(Error::Io(e));
            }
        };
        if n == 0 {
            self.broken = true;
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "corrald closed the connection",
            )));
        }
        serde_json::from_str(&self.line)
            .map_err(|e| Error::Protocol(format!("{e}: {}", self.line.trim_end())))
    }
}

fn hello() -> Op {
    Op::Hello {
        version: PROTOCOL_VERSION,
        client: Some(format!("corral_client {}", env!("CARGO_PKG_VERSION"))),
    }
}

/// A timeout as the protocol's `timeout_ms`: whole milliseconds, rounded up so that a
/// short positive timeout never becomes "do not wait".
pub(crate) fn timeout_ms(timeout: Option<Duration>) -> Option<u64> {
    timeout.map(|d| u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};

    /// Requests a [`fake`] corrald received, `hello` excluded.
    type Seen = Arc<Mutex<Vec<Value>>>;

    /// A client connected to a scripted corrald that answers each request (a JSON object)
    /// with `reply(request)`: a `{"result": ..}`, `{"error": ..}` or `{"event": ..}`
    /// object, or an array of them to send in turn.
    fn fake(reply: impl Fn(&Value) -> Value + Send + 'static) -> (Client, Seen) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("corral-ctl-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let seen = Seen::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            for line in BufReader::new(stream).lines() {
                let request: Value = serde_json::from_str(&line.unwrap()).unwrap();
                let replies = if request["op"] == "hello" {
                    json!({"result": {"protocol": 1, "server": "fake", "pid": 1}})
                } else {
                    log.lock().unwrap().push(request.clone());
                    reply(&request)
                };
                let replies = match replies {
                    Value::Array(all) => all,
                    one => vec![one],
                };
                for mut r in replies {
                    r["id"] = request["id"].clone();
                    writeln!(writer, "{r}").unwrap();
                }
            }
        });
        let client = Client::connect_to(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        (client, seen)
    }

    fn error(code: &str) -> Value {
        json!({"error": {"code": code, "message": format!("fake {code}")}})
    }

    #[test]
    fn handles_share_one_client_and_encode_their_ops() {
        let (client, seen) = fake(|r| match r["op"].as_str().unwrap() {
            "queue_put" => json!({"result": {"depth": 1}}),
            "counter_add" => json!({"result": {"counter": "c", "value": 5}}),
            _ => error("unknown_op"),
        });
        let q = client.queue("q");
        let c = client.counter("c");
        assert_eq!(q.put("Data from process").unwrap(), 1);
        assert_eq!(c.add(-2).unwrap(), 5);
        assert_eq!(
            q.put_timeout(7, Some(Duration::from_millis(1500))).unwrap(),
            1
        );
        assert_eq!(q.try_put(json!({"a": 1})).unwrap(), 1);
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0],
            json!({"id": 2, "op": "queue_put", "queue": "q", "value": "Data from process", "block": true})
        );
        assert_eq!(
            seen[1],
            json!({"id": 3, "op": "counter_add", "counter": "c", "delta": -2})
        );
        assert_eq!(seen[2]["timeout_ms"], 1500);
        assert_eq!(seen[3]["block"], false);
        assert!(seen[3].get("timeout_ms").is_none());
    }

    #[test]
    fn undecodable_items_are_handed_back() {
        let (client, seen) = fake(|_| json!({"result": {"items": ["not a number"]}}));
        let err = client.queue("q").get::<u32>(None).unwrap_err();
        match err {
            Error::Decode { value, .. } => assert_eq!(value, json!("not a number")),
            other => panic!("expected a decode error, got {other:?}"),
        }
        let err = client.queue("q").try_get_many::<u32>(5).unwrap_err();
        assert!(matches!(err, Error::Decode { value, .. } if value == json!(["not a number"])));
        let seen = seen.lock().unwrap();
        assert!(seen[0].get("timeout_ms").is_none() && seen[0]["block"] == true);
        assert_eq!(
            (seen[1]["count"].as_u64(), &seen[1]["block"]),
            (Some(5), &json!(false))
        );
    }

    #[test]
    fn server_errors_carry_their_code() {
        let (client, _) = fake(|_| error("empty"));
        let err = client.queue("q").try_get::<Value>().unwrap_err();
        assert_eq!(err.code(), Some(corral_proto::ErrorCode::Empty));
        assert_eq!(err.to_string(), "fake empty");
    }

    #[test]
    fn lock_guards_release_once_on_drop_or_release() {
        let (client, seen) = fake(|r| match r["op"].as_str().unwrap() {
            "lock_acquire" if r["block"] == false => error("locked"),
            "lock_acquire" => json!({"result": {"lock": r["lock"], "token": 9}}),
            "lock_release" => json!({"result": {}}),
            _ => error("unknown_op"),
        });
        let lock = client.lock("L");
        {
            let guard = lock.acquire(Some(Duration::from_secs(2))).unwrap();
            assert_eq!(guard.token(), 9);
        }
        lock.acquire(None).unwrap().release().unwrap();
        assert!(lock.try_acquire().unwrap().is_none());
        let ops: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| format!("{} {}", r["op"], r["timeout_ms"]))
            .collect();
        assert_eq!(
            ops,
            [
                "\"lock_acquire\" 2000",
                "\"lock_release\" null",
                "\"lock_acquire\" null",
                "\"lock_release\" null",
                "\"lock_acquire\" null",
            ]
        );
    }

    #[test]
    fn streamed_events_come_before_the_result() {
        let (client, _) = fake(|_| {
            json!([
                {"event": {"instance": 0, "line": "a"}},
                {"event": {"instance": 0, "line": "b"}},
                {"result": {"lines": []}}
            ])
        });
        let mut events = Vec::new();
        let op = Op::Logs {
            unit: "u".into(),
            instance: None,
            lines: 1,
            follow: true,
        };
        let _: LogsResult = client.call_streaming(op, |e| events.push(e)).unwrap();
        assert_eq!(events.len(), 2);
    }

    #[test]
    #[should_panic(expected = "inside one of its own call_streaming callbacks")]
    fn using_the_client_from_its_own_callback_panics() {
        let (client, _) = fake(|_| json!([{"event": 1}, {"result": {}}]));
        let _: Value = client
            .call_streaming(Op::Reload {}, |_| {
                let _ = client.counter("c").get();
            })
            .unwrap();
    }

    #[test]
    fn a_lost_connection_stays_lost() {
        let (client, _) = fake(|_| panic!("the fake corrald dies"));
        assert!(matches!(client.counter("c").get(), Err(Error::Io(_))));
        let err = client.counter("c").get().unwrap_err();
        assert!(err.to_string().contains("connect again"), "{err}");
    }

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(timeout_ms(None), None);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), Some(0));
        assert_eq!(timeout_ms(Some(Duration::from_micros(1))), Some(1));
        assert_eq!(timeout_ms(Some(Duration::from_millis(1500))), Some(1500));
        assert_eq!(
            timeout_ms(Some(Duration::from_secs_f64(2.0005))),
            Some(2001)
        );
        assert_eq!(timeout_ms(Some(Duration::MAX)), Some(u64::MAX));
    }
}
