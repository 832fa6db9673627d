//! Why a client's request body could not be read, in words the client and
//! the operator can act on. hyper's client reports any failure of the
//! body it sends as "error from user's Body stream"; the cause is further
//! down its source chain: the server side's error reading the client (a
//! malformed chunk, an end of file before the body's end, an HTTP/2
//! reset).

use std::error::Error as _;
use std::io::ErrorKind;

/// The 400's text for a request body that broke while it was being sent
/// to a server (`e`, hyper's client error), `received` body bytes into it
/// (the access log's `bytes_in`), `length` its Content-Length if it had
/// one. Two kinds are told apart, as hyper's decoder (RFC 9112 §6.3,
/// §7.1) tells them: malformed chunked framing (an `InvalidInput` or
/// `InvalidData` read error) and a connection that ended before the body
/// did (`UnexpectedEof`, or hyper's incomplete message). Anything else
/// names its innermost cause.
pub fn why_unreadable(e: &hyper::Error, received: u64, length: Option<u64>) -> String {
    let mut inner: Option<&(dyn std::error::Error + 'static)> = e.source();
    let mut last = None;
    while let Some(cause) = inner {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ErrorKind::UnexpectedEof => return ended_early(received, length),
                ErrorKind::InvalidInput | ErrorKind::InvalidData => {
                    return format!(
                    "the request body could not be read: its chunked encoding is malformed ({})",
                    lower_first(&io.to_string())
                )
                }
                _ => {}
            }
        }
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return ended_early(received, length);
        }
        last = Some(cause);
        inner = cause.source();
    }
    match last {
        Some(cause) => format!("the request body could not be read: {cause}"),
        None => format!("the request body could not be read: {e}"),
    }
}

/// The client's connection (or its sending side) ended mid-body.
fn ended_early(received: u64, length: Option<u64>) -> String {
    match length {
        Some(length) => format!(
            "the request body could not be read: the client closed its connection before \
             the body ended ({received} of {length} bytes)"
        ),
        None => format!(
            "the request body could not be read: the client closed its connection before \
             the body ended (after {received} bytes)"
        ),
    }
}

/// hyper's messages start with a capital ("Invalid chunk size line");
/// here they follow a colon.
fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
