//! The live forms of `pocket explain`: a request carrying
//! `X-Pocket-Explain: 1` from an address in the policy's
//! `admin.explain_from` is decided with a [`super::Trace`], and gets the
//! trace's compact form back in an `X-Pocket-Explain` response header (and
//! in its access log line). Every other request goes through the untraced
//! code: the only per-request cost is one test of "does the policy have
//! `explain_from`", made on load-time data.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::Trace;
use crate::config::Policy;
use crate::proxy::decide::{decide_traced, Route};
use crate::proxy::forward::canonical_ip;
use crate::script::api::request::RequestView;
use crate::script::WorkerScript;

/// The request header that asks, and the response header that answers.
pub const HEADER: HeaderName = HeaderName::from_static("x-pocket-explain");

/// The longest `X-Pocket-Explain` response header, in bytes: well under
/// the smallest header buffer a client or proxy in front is likely to
/// have (nginx's `proxy_buffer_size` is 4 KiB or 8 KiB by default,
/// HAProxy's `tune.bufsize` 16 KiB for the whole head). A longer trace is
/// cut and ends in `...`; the access log keeps it whole.
pub const MAX_HEADER_BYTES: usize = 2048;

/// Whether this request is to be explained. When the policy has
/// `admin.explain_from`, the request header belongs to Pocket: it is
/// removed from every request (listed client or not), so the servers and
/// the script never see it. Without `explain_from` the header means
/// nothing to Pocket and is forwarded like any other.
#[inline]
pub fn asked(policy: &Policy, peer: IpAddr, headers: &mut HeaderMap) -> bool {
    match &policy.admin {
        Some(admin) if !admin.explain_from.is_empty() => {
            asked_by(&admin.explain_from, peer, headers)
        }
        _ => false,
    }
}

/// Only for policies with `explain_from`: out of line, so that the test
/// above is all an ordinary policy's requests carry.
#[inline(never)]
fn asked_by(from: &[IpAddr], peer: IpAddr, headers: &mut HeaderMap) -> bool {
    // `remove` takes every line of the header, not just the first.
    let Some(value) = headers.remove(HEADER) else {
        return false;
    };
    let peer = canonical_ip(peer);
    value.as_bytes().trim_ascii() == b"1" && from.iter().any(|ip| canonical_ip(*ip) == peer)
}

/// [`crate::proxy::decide::decide_traced`] for an explained request, with
/// `pocket.match`'s route reporting open for just this request.
pub fn decide(script: &WorkerScript, view: &mut RequestView, t: &mut Trace) -> Route {
    let lua = &script.vm.lua;
    super::routes::gate(lua, true);
    // Nothing noted before this request is its own.
    drop(super::routes::take());
    let route = decide_traced(script, view, t);
    super::routes::gate(lua, false);
    route
}

/// The compact trace as a header value: visible ASCII only (anything else,
/// e.g. a non-ASCII hash key a script returned, becomes `?`), at most
/// [`MAX_HEADER_BYTES`].
pub fn header_value(compact: &str) -> HeaderValue {
    const CUT: &[u8] = b"...";
    let mut bytes: Vec<u8> = compact
        .bytes()
        .map(|b| if (0x20..=0x7e).contains(&b) { b } else { b'?' })
        .collect();
    if bytes.len() > MAX_HEADER_BYTES {
        bytes.truncate(MAX_HEADER_BYTES - CUT.len());
        bytes.extend_from_slice(CUT);
    }
    HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_value_is_visible_ascii_and_bounded() {
        let v = header_value("hook=\"caf\u{e9}\"\tx");
        assert_eq!(v.as_bytes(), b"hook=\"caf??\"?x");
        let long = "a".repeat(MAX_HEADER_BYTES * 2);
        let v = header_value(&long);
        assert_eq!(v.len(), MAX_HEADER_BYTES);
        assert!(v.as_bytes().ends_with(b"..."));
    }

    #[test]
    fn only_a_listed_address_with_1_is_explained_and_the_header_always_goes() {
        let from: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("1"));
        assert!(asked_by(&from, "::ffff:127.0.0.1".parse().unwrap(), &mut h));
        assert!(h.get(HEADER).is_none());
        h.insert(HEADER, HeaderValue::from_static("1"));
        assert!(!asked_by(&from, "127.0.0.2".parse().unwrap(), &mut h));
        assert!(h.get(HEADER).is_none());
        h.insert(HEADER, HeaderValue::from_static("yes"));
        assert!(!asked_by(&from, "127.0.0.1".parse().unwrap(), &mut h));
    }
}
