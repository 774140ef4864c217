//! Bounds on what one client may take from corrald over the control socket: reply bytes,
//! connections per user, idle connections, half-closed connections, and requests whose
//! arguments are wrong.

use corral_tests::TestDaemon;

fn code(reply: &serde_json::Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<none>")
}

fn message(reply: &serde_json::Value) -> &str {
    reply["error"]["message"].as_str().unwrap_or("<none>")
}

#[test]
fn a_bad_enum_value_is_a_bad_argument_naming_the_field_and_the_accepted_values() {
    let mut d = TestDaemon::new();
    d.start();
    let mut c = d.raw();
    let reply = c.roundtrip(r#"{"id":3,"op":"array_create","array":"a","kind":"i32","length":4}"#);
    assert_eq!(reply["id"], 3);
    assert_eq!(code(&reply), "bad_request", "{reply}");
    let text = message(&reply);
    for part in ["`kind`", "`i32`", "`i64`", "`f64`"] {
        assert!(text.contains(part), "{text} should name {part}");
    }
    // An op that really is unknown is still `unknown_op`.
    let unknown = c.roundtrip(r#"{"id":4,"op":"array_crate","array":"a"}"#);
    assert_eq!(code(&unknown), "unknown_op", "{unknown}");
}

#[test]
fn an_op_that_is_not_a_string_is_reported_as_such() {
    let mut d = TestDaemon::new();
    d.start();
    let mut c = d.raw();
    let reply = c.roundtrip(r#"{"id":5,"op":7}"#);
    assert_eq!(code(&reply), "bad_request", "{reply}");
    assert!(message(&reply).contains("`op` must be a string"), "{reply}");
    let missing = c.roundtrip(r#"{"id":6}"#);
    assert_eq!(code(&missing), "bad_request", "{missing}");
    assert!(message(&missing).contains("no `op`"), "{missing}");
}

#[test]
fn run_refuses_environment_names_that_unit_files_refuse() {
    let mut d = TestDaemon::new();
    d.start();
    let mut c = d.raw();
    for (id, name, problem) in [
        (1, "A=B", "must not contain `=`"),
        (2, "", "must not be empty"),
    ] {
        let request = serde_json::json!({
            "id": id, "op": "run", "command": ["true"], "env": { name: "x" }
        });
        let reply = c.roundtrip(&request.to_string());
        assert_eq!(code(&reply), "bad_request", "{reply}");
        assert!(message(&reply).contains(problem), "{reply}");
    }
    // Nothing was started.
    let status = c.roundtrip(r#"{"id":9,"op":"status"}"#);
    assert_eq!(status["result"]["units"], serde_json::json!([]), "{status}");
    // A good name still runs.
    let ok = c.roundtrip(r#"{"id":10,"op":"run","command":["true"],"env":{"GOOD":"1"}}"#);
    assert!(ok.get("result").is_some(), "{ok}");
}
