//! A header sent as several field lines is one list (RFC 9110 §5.3): a
//! recipient may join the lines with commas, in order, and mean the same.
//! Everywhere Pocket reads a header as one value (`req:header`, hash keys,
//! X-Forwarded-For) it reads the joined list, so a value split over two
//! lines is never half seen. Cookie lines join with "; " (RFC 9113
//! §8.2.3, where HTTP/2 clients split them); Set-Cookie is never joined
//! (RFC 9110 §5.3: its values may contain commas).

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName};

/// The separator a header's lines are joined with, or None when they
/// cannot be (Set-Cookie).
fn separator(name: &HeaderName) -> Option<&'static [u8]> {
    if *name == header::SET_COOKIE {
        None
    } else if *name == header::COOKIE {
        Some(b"; ")
    } else {
        Some(b", ")
    }
}

/// Every line of `name` as one value: borrowed when there is one line
/// (the usual case), joined when there are more. Set-Cookie gives its
/// first line. None when absent.
pub fn combined<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, [u8]>> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    let Some(second) = lines.next() else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let Some(sep) = separator(name) else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let mut out = first.as_bytes().to_vec();
    for line in std::iter::once(second).chain(lines) {
        out.extend_from_slice(sep);
        out.extend_from_slice(line.as_bytes());
    }
    Some(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn lines_join_in_order() {
        let mut h = HeaderMap::new();
        assert!(combined(&h, &header::ACCEPT).is_none());
        h.append(header::ACCEPT, HeaderValue::from_static("a"));
        assert_eq!(combined(&h, &header::ACCEPT).unwrap().as_ref(), b"a");
        h.append(header::ACCEPT, HeaderValue::from_static("b, c"));
        assert_eq!(combined(&h, &header::ACCEPT).unwrap().as_ref(), b"a, b, c");
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(combined(&h, &header::COOKIE).unwrap().as_ref(), b"a=1; b=2");
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("a=1; Expires=Wed, 1"),
        );
        h.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(
            combined(&h, &header::SET_COOKIE).unwrap().as_ref(),
            b"a=1; Expires=Wed, 1"
        );
    }
}
