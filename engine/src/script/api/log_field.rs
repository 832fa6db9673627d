//! `req:log_field(name, value)`: a field the script adds to this request's
//! access log line. Hooks run on the worker's thread, one at a time, so
//! the fields wait here (per thread) until the request path takes them
//! into the exchange's record right after the hook returns.

use std::cell::RefCell;

use crate::context::RequestId;

/// The most fields one request can carry (a line stays a line).
pub const MAX_FIELDS: usize = 16;
/// The longest field name, bytes.
pub const MAX_NAME: usize = 64;
/// The longest value, bytes.
pub const MAX_VALUE: usize = 512;

/// The request the waiting fields belong to (fields left by a request
/// nobody took them for, as in `pocket test`, are not another's), and
/// the fields.
type Waiting = (Option<RequestId>, Vec<(String, String)>);

thread_local! {
    static FIELDS: RefCell<Waiting> = const { RefCell::new((None, Vec::new())) };
}

/// Adds (or replaces) a field; errors say which limit was hit, in the
/// script's words.
pub fn add(id: RequestId, name: &str, value: String) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(format!(
            "log_field: name {name:?} must be 1 to {MAX_NAME} letters, digits, '_', '-' or '.'"
        ));
    }
    if value.len() > MAX_VALUE {
        return Err(format!(
            "log_field: the value of {name:?} has {} bytes (at most {MAX_VALUE})",
            value.len()
        ));
    }
    FIELDS.with(|f| {
        let (owner, f) = &mut *f.borrow_mut();
        if *owner != Some(id) {
            *owner = Some(id);
            f.clear();
        }
        if let Some(slot) = f.iter_mut().find(|(n, _)| n == name) {
            slot.1 = value;
            return Ok(());
        }
        if f.len() >= MAX_FIELDS {
            return Err(format!(
                "log_field: a request carries at most {MAX_FIELDS} fields"
            ));
        }
        f.push((name.to_string(), value));
        Ok(())
    })
}

/// Moves the fields added since the last call into `into` (a field added
/// again replaces the earlier value). Costs nothing when none was added.
#[inline]
pub fn take_into(into: &mut Vec<(String, String)>) {
    FIELDS.with(|f| {
        let (_, f) = &mut *f.borrow_mut();
        if f.is_empty() {
            return;
        }
        for (name, value) in f.drain(..) {
            if let Some(i) = into.iter().position(|(n, _)| *n == name) {
                into[i].1 = value;
            } else if into.len() < MAX_FIELDS {
                into.push((name, value));
            }
        }
    })
}
