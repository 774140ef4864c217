//! A frame that is not a request: the error that says why, with the request's id
//! when it has one.

use corral_proto::{ErrorBody, ErrorCode};

/// The id of a request that failed to parse, if it has one, so the client can match the error.
pub(super) fn request_id(bytes: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("id").and_then(|id| id.as_u64()))
        .unwrap_or(0)
}

pub(super) fn parse_error(bytes: &[u8], e: &serde_json::Error) -> ErrorBody {
    let value = serde_json::from_slice::<serde_json::Value>(bytes).ok();
    let Some(value) = value else {
        if std::str::from_utf8(bytes).is_err() {
            return ErrorBody::new(ErrorCode::BadRequest, "request is not valid UTF-8");
        }
        return ErrorBody::new(
            ErrorCode::BadRequest,
            format!("request is not valid JSON: {e}"),
        );
    };
    let Some(object) = value.as_object() else {
        return ErrorBody::new(
            ErrorCode::BadRequest,
            "a request is a JSON object like {\"id\":1,\"op\":\"status\"}",
        );
    };
    let op = match object.get("op") {
        None => {
            return ErrorBody::new(
                ErrorCode::BadRequest,
                "request has no `op`: name the operation, e.g. \"op\":\"status\"",
            );
        }
        Some(serde_json::Value::String(op)) => op,
        Some(other) => {
            return ErrorBody::new(
                ErrorCode::BadRequest,
                format!("`op` must be a string naming the operation, got {other}"),
            );
        }
    };
    if !is_known_op(op) {
        return ErrorBody::new(
            ErrorCode::UnknownOp,
            format!(
                "unknown op `{op}`; this corrald speaks protocol {}",
                corral_proto::PROTOCOL_VERSION
            ),
        );
    }
    ErrorBody::new(ErrorCode::BadRequest, bad_argument(op, object, e))
}

/// Whether `op` names an operation (whatever its arguments): an unknown one fails on the
/// tag itself, before any field is looked at.
fn is_known_op(op: &str) -> bool {
    match serde_json::from_value::<corral_proto::Op>(serde_json::json!({ "op": op })) {
        Ok(_) => true,
        Err(e) => !e
            .to_string()
            .starts_with(&format!("unknown variant `{op}`")),
    }
}

/// Describes a request whose op is known but whose arguments are not, naming the field
/// when serde's message allows it to be found (serde does not report the path of a field
/// inside a tagged enum, so an invalid enum value is matched back to its key).
fn bad_argument(
    op: &str,
    object: &serde_json::Map<String, serde_json::Value>,
    e: &serde_json::Error,
) -> String {
    let message = e.to_string();
    let rejected = message
        .strip_prefix("unknown variant `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(value, _)| value);
    let field = rejected.and_then(|value| {
        object
            .iter()
            .find(|(key, v)| *key != "op" && v.as_str() == Some(value))
            .map(|(key, _)| key)
    });
    match (field, rejected) {
        (Some(field), Some(value)) => {
            let accepted = message
                .split_once(", expected ")
                .map_or("", |(_, rest)| rest);
            let accepted = accepted.split(" at line ").next().unwrap_or(accepted);
            format!(
                "bad argument `{field}` of `{op}`: `{value}` is not accepted; expected {accepted}"
            )
        }
        _ => format!("bad arguments for `{op}`: {message}"),
    }
}
