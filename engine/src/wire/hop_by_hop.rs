//! Which headers belong to one connection rather than to the message
//! (RFC 9110 §7.6.1), and which say how a message is framed: rules of
//! HTTP itself, used by the request path (which strips them) and by the
//! script API (which refuses to set them).

use http::header::{self, HeaderMap, HeaderName};

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    // The standard names compare as an enum, without their text; the
    // other two by text (the list above, in another form).
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// Headers that say how a message is framed or how a connection is used.
/// They are Pocket's alone to write: a script that could set them could
/// make the client or the server read a different message than the one
/// sent (a desync), so `set_header`, `add_header`, `remove_header` and
/// `pocket.respond` refuse them.
pub fn is_framing(name: &HeaderName) -> bool {
    *name == header::CONTENT_LENGTH || is_hop_by_hop(name)
}

/// Removes hop-by-hop headers, including those the Connection header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names, no hashing: most requests have none, and
    // most responses only `Connection: keep-alive`.
    let mut found: [Option<HeaderName>; HOP_BY_HOP.len()] = Default::default();
    let mut n = 0;
    for name in headers.keys() {
        if n < found.len() && is_hop_by_hop(name) {
            found[n] = Some(name.clone());
            n += 1;
        }
    }
    if n == 0 {
        return;
    }
    // Names the Connection header lists go too (RFC 9110 7.6.1).
    let listed = listed_in_connection(headers);
    for name in listed.into_iter().chain(found.into_iter().flatten()) {
        headers.remove(name);
    }
    debug_assert!(!headers.keys().any(is_hop_by_hop));
}

/// The names the Connection lines list (RFC 9110 §7.6.1), which are
/// hop-by-hop too; the usual values, keep-alive and close, name nothing
/// else. A token that is no header name is passed over.
pub(crate) fn listed_in_connection(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut listed: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                listed.push(name);
            }
        }
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_and_the_test_agree() {
        for name in HOP_BY_HOP {
            assert!(is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["host", "keep-alives", "x-te", "connections", "expect"] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
    }
}
