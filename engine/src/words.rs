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

/// The verb that agrees with `n` subjects: `verb(1, "is", "are")` is
/// `is`, `verb(2, "is", "are")` is `are`. Goes with [`count`]:
/// "1 worker is stuck", "2 workers are stuck".
pub fn verb<'a>(n: impl Into<u64>, one: &'a str, many: &'a str) -> &'a str {
    if n.into() == 1 {
        one
    } else {
        many
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular() {
        assert_eq!(super::count(1u32, "check"), "1 check");
        assert_eq!(super::count(0u32, "check"), "0 checks");
        assert_eq!(super::count(2u32, "server"), "2 servers");
        assert_eq!(super::verb(1u32, "is", "are"), "is");
        assert_eq!(super::verb(0u32, "is", "are"), "are");
    }
}
