//! Semaphores, events and anonymous sessions: waits woken by the operation that ends
//! them, durability across `kill -9` of corrald, and anonymous objects removed once
//! every holder (connection or process) is gone.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use corral_client::{AnonKind, Client, ErrorCode};
use corral_tests::{TestDaemon, anonymous_left, make_anonymous, wait_for};

#[test]
fn a_blocked_semaphore_acquire_is_woken_by_a_release() {
    let mut d = TestDaemon::new();
    d.start();
    let client = d.client();
    let sem = client.semaphore("slots");
    assert_eq!(sem.create(1, None).unwrap().value, 1);
    assert_eq!(sem.acquire(None).unwrap(), 0);
    let socket = d.socket();
    let waiter = std::thread::spawn(move || {
        let client = Client::connect_to(&socket).unwrap();
        client
            .semaphore("slots")
            .acquire(Some(Duration::from_secs(120)))
    });
    wait_for("the waiter to queue", || {
        (sem.get().unwrap().waiters == 1).then_some(())
    });
    // The permit goes to the waiter, not to the free count.
    assert_eq!(sem.release().unwrap(), 0);
    assert_eq!(waiter.join().unwrap().unwrap(), 0);
    assert_eq!(sem.get().unwrap().value, 0);
    sem.release().unwrap();
    assert_eq!(sem.get().unwrap().value, 1);
}

#[test]
fn semaphore_waiters_are_served_first_come_first_served() {
    let mut d = TestDaemon::new();
    d.start();
    let client = d.client();
    let sem = client.semaphore("fifo");
    sem.create(0, None).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for n in 0..3 {
        let socket = d.socket();
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            let client = Client::connect_to(&socket).unwrap();
            client
                .semaphore("fifo")
                .acquire(Some(Duration::from_secs(120)))
                .unwrap();
            tx.send(n).unwrap();
        }));
        wait_for("the waiter to queue", || {
            (sem.get().unwrap().waiters == n + 1).then_some(())
        });
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        sem.release().unwrap();
        order.push(rx.recv_timeout(Duration::from_secs(60)).unwrap());
    }
    assert_eq!(order, vec![0, 1, 2]);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_bounded_semaphore_refuses_a_release_past_its_bound() {
    let mut d = TestDaemon::new();
    d.start();
    let client = d.client();
    let sem = client.semaphore("bounded");
    sem.create(1, Some(1)).unwrap();
    let err = sem.release().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Overflow), "{err}");
    assert!(sem.try_acquire().unwrap());
    assert!(!sem.try_acquire().unwrap(), "no permit left");
    let err = sem.acquire(Some(Duration::from_millis(50))).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Timeout), "{err}");
    sem.release().unwrap();
    // Created again with the same bound: left as it is; with another bound: refused.
    assert_eq!(sem.create(0, Some(1)).unwrap().value, 1);
    let err = sem.create(1, None).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TypeMismatch), "{err}");
    let err = client.semaphore("never").acquire(None).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    let err = client.semaphore("x").create(3, Some(2)).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
}

#[test]
fn an_event_wait_is_woken_by_set() {
    let mut d = TestDaemon::new();
    d.start();
    let client = d.client();
    let event = client.event("go");
    assert!(!event.is_set().unwrap());
    assert!(!event.wait(Some(Duration::from_millis(20))).unwrap());
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let socket = d.socket();
        waiters.push(std::thread::spawn(move || {
            let client = Client::connect_to(&socket).unwrap();
            client.event("go").wait(Some(Duration::from_secs(120)))
        }));
    }
    wait_for("both waiters to wait", || {
        let e = client.events().unwrap();
        e.iter()
            .any(|e| e.event == "go" && e.waiters == 2)
            .then_some(())
    });
    event.set().unwrap();
    for w in waiters {
        assert!(w.join().unwrap().unwrap());
    }
    assert!(event.wait(None).unwrap(), "a set event does not block");
    event.clear().unwrap();
    assert!(!event.is_set().unwrap());
}

#[test]
fn semaphores_and_events_survive_kill_9_of_corrald() {
    let mut d = TestDaemon::new();
    d.start();
    {
        let client = d.client();
        let sem = client.semaphore("durable");
        sem.create(3, Some(5)).unwrap();
        sem.acquire(None).unwrap();
        client.event("flag").set().unwrap();
        client.event("other").clear().unwrap();
    }
    d.kill9();
    d.start();
    let client = d.client();
    let state = client.semaphore("durable").get().unwrap();
    assert_eq!((state.value, state.bound), (2, Some(5)));
    assert!(client.event("flag").is_set().unwrap());
    assert!(!client.event("other").is_set().unwrap());
    let listed = d.ctl_ok(&["semaphore", "list"]);
    assert!(listed.contains("durable"), "{listed}");
}

#[test]
fn anonymous_objects_are_gone_once_the_program_and_its_children_are_killed() {
    let mut d = TestDaemon::new();
    d.start();
    let session = "s-0123456789abcdef";
    // The "program" and its "child": two processes of a group of their own.
    let mut program = std::process::Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap();
    {
        let client = d.client();
        // The connection holds too, and closes first: the processes keep the session.
        client.anon_hold(session, None).unwrap();
        client.anon_hold(session, Some(program.id())).unwrap();
        let held = client.anon_hold(session, Some(child.id())).unwrap();
        assert_eq!(held.holders, 3);
        make_anonymous(&client, session);
    }
    let client = d.client();
    assert_eq!(anonymous_left(&client), 5);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(program.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    program.wait().unwrap();
    // Still held by the child (a sync round trip: the exit has been seen by now or is
    // about to be; the child's hold keeps everything either way).
    assert_eq!(anonymous_left(&client), 5, "the child still holds them");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    wait_for("the anonymous objects to be removed", || {
        (anonymous_left(&client) == 0).then_some(())
    });
    // A named object is untouched.
    client.counter("named").add(1).unwrap();
    assert_eq!(client.counter("named").get().unwrap(), 1);
}

#[test]
fn anonymous_sessions_refuse_bad_requests() {
    let mut d = TestDaemon::new();
    d.start();
    let client = d.client();
    let err = client
        .anon_add("nobody-holds-this", AnonKind::Queue, "q")
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    // A process that is gone cannot hold.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let err = client.anon_hold("s1", Some(pid)).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    let err = client.anon_hold("bad token!", None).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    let mut raw = d.raw();
    let reply = raw.roundtrip(r#"{"id":1,"op":"anon_add","session":"s","kind":"lock","name":"x"}"#);
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    let reply = raw.roundtrip(r#"{"id":2,"op":"semaphore_create","semaphore":"s","value":-1}"#);
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
}

#[test]
fn anonymous_sessions_survive_kill_9_of_corrald_and_end_for_holders_gone_meanwhile() {
    let mut d = TestDaemon::new();
    d.start();
    let spawn_sleep = || {
        std::process::Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let mut lives = spawn_sleep();
    let mut dies = spawn_sleep();
    {
        let client = d.client();
        client.anon_hold("s-lives", Some(lives.id())).unwrap();
        client.anon_hold("s-dies", Some(dies.id())).unwrap();
        client.counter("c-lives").add(1).unwrap();
        client.counter("c-dies").add(1).unwrap();
        client
            .anon_add("s-lives", AnonKind::Counter, "c-lives")
            .unwrap();
        client
            .anon_add("s-dies", AnonKind::Counter, "c-dies")
            .unwrap();
    }
    d.kill9();
    // A holder that exits while corrald is down.
    dies.kill().unwrap();
    dies.wait().unwrap();
    d.start();
    let client = d.client();
    let exists = |name: &str| client.counters().unwrap().iter().any(|c| c.counter == name);
    wait_for("the session of the dead holder to end", || {
        (!exists("c-dies")).then_some(())
    });
    assert!(exists("c-lives"), "its holder still runs");
    lives.kill().unwrap();
    lives.wait().unwrap();
    wait_for("the other session to end with its holder", || {
        (!exists("c-lives")).then_some(())
    });
}
