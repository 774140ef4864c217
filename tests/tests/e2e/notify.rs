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
