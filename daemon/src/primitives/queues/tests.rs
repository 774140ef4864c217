//! Unit tests of queues: leases, their deadlines, poison.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::*;
use crate::primitives::{Changes, ConnInfo, Limits, Outbox, Snapshot};

const CONN: ConnInfo = ConnInfo {
    id: 1,
    pid: None,
    uid: None,
};

fn snapshot(deliveries: &[u32]) -> Snapshot {
    let mut q = Queue::new(None);
    for (i, &d) in deliveries.iter().enumerate() {
        q.items.push_back(Item {
            seq: i as i64 + 1,
            value: format!("{i}"),
            deliveries: d,
        });
    }
    q.next_seq = deliveries.len() as i64 + 1;
    let mut s = Snapshot::default();
    s.queues.insert("q".into(), q);
    s
}

fn prims(deliveries: &[u32]) -> Primitives {
    let limits = Limits {
        max_item_bytes: 1 << 16,
        declared_queues: BTreeMap::new(),
    };
    Primitives::new(limits, snapshot(deliveries), 1)
}

/// Applies `op`; returns its reply (every reply of the batch is sent, as after a commit).
fn run(p: &mut Primitives, op: Op) -> Outcome {
    let slot = Arc::new(Mutex::new(None));
    let s = slot.clone();
    let mut changes = Changes::default();
    let mut out = Outbox::default();
    p.apply(
        CONN,
        op,
        Box::new(move |o| *s.lock().unwrap() = Some(o)),
        &mut changes,
        &mut out,
    );
    for (reply, outcome, _) in out.replies {
        reply(outcome);
    }
    slot.lock().unwrap().take().expect("answered")
}

fn get_ack(p: &mut Primitives) -> Outcome {
    run(
        p,
        Op::QueueGet {
            queue: "q".into(),
            count: 1,
            timeout_ms: None,
            block: false,
            ack: true,
            visibility_ms: None,
            detach: false,
        },
    )
}

#[test]
fn a_failed_commit_keeps_earlier_leases_and_forgets_its_own() {
    let mut p = prims(&[0, 0]);
    let first = get_ack(&mut p).unwrap().to_value();
    let first_id = first["leases"][0]["id"].as_u64().unwrap();
    // The first lease was committed (deliveries 1 on disk); the second get's batch fails.
    let _second = get_ack(&mut p).unwrap();
    p.restore(snapshot(&[1, 0]));
    let q = &p.queues["q"];
    assert_eq!(q.leased.len(), 1, "the committed lease is kept");
    assert_eq!(q.items.len(), 1, "the rolled-back one is waiting again");
    assert_eq!(q.items[0].seq, 2);
    let acked = run(
        &mut p,
        Op::QueueAck {
            queue: "q".into(),
            ids: vec![first_id],
        },
    );
    assert_eq!(acked.unwrap().to_value()["count"], 1);
}

#[test]
fn deadlines_of_acked_leases_do_not_pile_up() {
    let mut p = prims(&[]);
    for i in 0..5000 {
        run(
            &mut p,
            Op::QueuePut {
                queue: "q".into(),
                value: i.into(),
                timeout_ms: None,
                block: true,
            },
        )
        .unwrap();
        let id = get_ack(&mut p).unwrap().to_value()["leases"][0]["id"]
            .as_u64()
            .unwrap();
        run(
            &mut p,
            Op::QueueAck {
                queue: "q".into(),
                ids: vec![id],
            },
        )
        .unwrap();
    }
    assert!(p.leases.is_empty());
    assert!(
        p.lease_deadlines.len() <= 1025,
        "{} deadlines kept for no lease",
        p.lease_deadlines.len()
    );
}

#[test]
fn returned_items_go_back_in_position_order_and_poison_is_swept() {
    let mut p = prims(&[0, 0, 5]);
    p.queues.get_mut("q").unwrap().max_deliveries = Some(5);
    let a = get_ack(&mut p).unwrap().to_value()["leases"][0]["id"]
        .as_u64()
        .unwrap();
    let b = get_ack(&mut p).unwrap().to_value()["leases"][0]["id"]
        .as_u64()
        .unwrap();
    for id in [b, a] {
        run(
            &mut p,
            Op::QueueNack {
                queue: "q".into(),
                ids: vec![id],
            },
        )
        .unwrap();
    }
    let seqs: Vec<i64> = p.queues["q"].items.iter().map(|i| i.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    get_ack(&mut p).unwrap();
    get_ack(&mut p).unwrap();
    // Item 3 was delivered 5 times before (a restart): it goes to q.dead, not out.
    let empty = get_ack(&mut p).unwrap_err();
    assert_eq!(empty.code, ErrorCode::Empty);
    assert_eq!(p.queues["q.dead"].items.len(), 1);
}
