//! Test cases made from a good message by one small change each, shared by
//! the wire comparisons (`request_tests`, `response_tests`, `scan_tests`):
//! a change of one byte is where two readings of HTTP/1 most often part.

/// Every case made from `base`: itself, each cut (every prefix), each
/// byte swapped for each of `swaps`, and an LF inserted anywhere.
pub fn variants(base: &[u8], swaps: &[u8]) -> Vec<Vec<u8>> {
    let mut cases = vec![base.to_vec()];
    for at in 0..base.len() {
        cases.push(base[..at].to_vec());
        for &b in swaps {
            let mut c = base.to_vec();
            c[at] = b;
            cases.push(c);
        }
        let mut c = base.to_vec();
        c.insert(at, b'\n');
        cases.push(c);
    }
    cases
}
