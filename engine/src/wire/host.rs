//! What a Host value may be (RFC 3986 §3.2.2): checked by the request
//! path on every request's host and by the script API on a Host a script
//! sets.

/// A Host value a script may set: non-empty `host[:port]`.
pub fn valid_host_value(h: &[u8]) -> bool {
    !h.is_empty() && valid_host(h)
}

/// The bytes of a reg-name (RFC 3986 §3.2.2): unreserved, sub-delims and
/// `%` of an escape; a table, since every request's host goes through it.
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-._~!$&'()*+,;=%";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2): a bracketed IP literal or a
/// reg-name (unreserved, sub-delims, percent escapes), then digits. Empty
/// is allowed (a target with no authority sends an empty Host).
pub fn valid_host(h: &[u8]) -> bool {
    let (host, port) = if h.first() == Some(&b'[') {
        let Some(end) = h.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &h[1..end];
        if inside.is_empty()
            || !inside
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        (&h[..0], &h[end + 1..])
    } else {
        match h.iter().position(|&b| b == b':') {
            Some(colon) => (&h[..colon], &h[colon..]),
            None => (h, &h[h.len()..]),
        }
    };
    let reg_name = host.iter().all(|&b| REG_NAME[b as usize]);
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    reg_name && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in ["a", "a.b:80", "[::1]:8080", "[::1]", "x-y_z~1", "", "a:"] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in ["a b", "a/b", "a:b", "a:1:2", "[::1", "[zz]", "a@b", "a\\b"] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }
}
