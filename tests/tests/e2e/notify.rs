//! systemd readiness: READY=1 once the socket answers, STOPPING=1 at shutdown.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use corral_client::Client;
use corral_tests::{TestDaemon, wait_for};

#[test]
fn corrald_notifies_ready_after_the_socket_answers_and_stopping_at_shutdown() {
    let d = TestDaemon::new();
    let notify_path = d.path("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = d
        .command()
        .env("NOTIFY_SOCKET", &notify_path)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = notify.recv(&mut buf).expect("READY=1 within 30 s");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.starts_with("READY=1\n"), "{first}");
    assert!(first.contains("STATUS="), "{first}");
    // Ready means ready: the socket answers at once.
    let client = Client::connect_to(d.socket()).expect("the socket answers after READY=1");
    client.shutdown().unwrap();
    let n = notify.recv(&mut buf).expect("STOPPING=1 within 30 s");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("STOPPING=1"));
    let status = wait_for("corrald to exit", || child.try_wait().unwrap());
    assert!(status.success());
}

#[test]
fn instances_do_not_inherit_the_service_managers_variables_meant_for_corrald() {
    let mut d = TestDaemon::new();
    d.unit(
        "envdump",
        "command = [\"/bin/sh\", \"-c\", \"env; echo END; sleep 1000\"]\n",
    );
    let notify_path = d.path("notify.sock");
    let _notify = UnixDatagram::bind(&notify_path).unwrap();
    // WATCHDOG_PID names another process: corrald itself must not ping.
    d.start_with(|c| {
        c.env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "60000000")
            .env("WATCHDOG_PID", "1")
            .env("LISTEN_FDS", "1")
            .env("JOURNAL_STREAM", "8:1234")
            .env("CORRAL_TEST_INHERITED", "yes");
    });
    let log = wait_for("the unit to print its environment", || {
        let log = d.log("envdump", 0);
        log.contains("END").then_some(log)
    });
    assert!(log.contains("CORRAL_TEST_INHERITED=yes"), "{log}");
    for name in [
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "JOURNAL_STREAM",
    ] {
        assert!(
            !log.lines().any(|l| l.starts_with(&format!("{name}="))),
            "{name} was passed on: {log}"
        );
    }
}
