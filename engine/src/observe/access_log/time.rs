//! RFC 3339 timestamps in UTC with milliseconds
//! (`2026-11-30T01:45:15.123Z`), the date and time part cached per thread
//! for the current second: one line costs a comparison and three digits.

use std::cell::Cell;

thread_local! {
    /// The second last formatted, and its `YYYY-MM-DDTHH:MM:SS.` text.
    static CACHE: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// Appends the timestamp for `unix_ms` (milliseconds since the epoch).
#[inline]
pub fn push_rfc3339(buf: &mut Vec<u8>, unix_ms: u64) {
    let secs = unix_ms / 1000;
    // While the thread exits (an exchange ended by a thread-local's
    // destructor) the cache may be gone: format without it.
    let text = CACHE
        .try_with(|cache| {
            let (cached, mut text) = cache.get();
            if cached != secs {
                text = seconds_text(secs);
                cache.set((secs, text));
            }
            text
        })
        .unwrap_or_else(|_| seconds_text(secs));
    buf.extend_from_slice(&text);
    let ms = (unix_ms % 1000) as u32;
    buf.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

/// `YYYY-MM-DDTHH:MM:SS.` for a second since the epoch (UTC).
fn seconds_text(secs: u64) -> [u8; 20] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    let mut out = [0u8; 20];
    let two = |v: u64| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    let y = y.clamp(0, 9999) as u64;
    out[0] = b'0' + (y / 1000) as u8;
    out[1] = b'0' + (y / 100 % 10) as u8;
    out[2] = b'0' + (y / 10 % 10) as u8;
    out[3] = b'0' + (y % 10) as u8;
    out[4] = b'-';
    out[5..7].copy_from_slice(&two(m as u64));
    out[7] = b'-';
    out[8..10].copy_from_slice(&two(d as u64));
    out[10] = b'T';
    out[11..13].copy_from_slice(&two(hh));
    out[13] = b':';
    out[14..16].copy_from_slice(&two(mm));
    out[16] = b':';
    out[17..19].copy_from_slice(&two(ss));
    out[19] = b'.';
    out
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(ms: u64) -> String {
        let mut b = Vec::new();
        push_rfc3339(&mut b, ms);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn formats_utc_with_milliseconds() {
        assert_eq!(text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(text(951_782_400_007), "2000-02-29T00:00:00.007Z");
        assert_eq!(text(1_796_003_115_123), "2026-11-30T01:45:15.123Z");
        // The cache must not keep an old second.
        assert_eq!(text(1_796_003_116_999), "2026-11-30T01:45:16.999Z");
    }
}
