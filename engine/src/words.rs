//! Counts in messages a user reads: "1 check failed", "2 checks failed".

/// `n` and the noun, singular for exactly one: `count(1, "server")` is
/// `1 server`, `count(3, "server")` is `3 servers`. Only for nouns whose
/// plural adds an `s` (every noun Pocket counts).
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular() {
        assert_eq!(super::count(1u32, "check"), "1 check");
        assert_eq!(super::count(0u32, "check"), "0 checks");
        assert_eq!(super::count(2u32, "server"), "2 servers");
    }
}
