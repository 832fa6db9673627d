//! Finding the line a table value came from. Lua tables keep no line
//! numbers, so a validation error is placed on the first line of the source
//! that mentions the offending value: right in practice, and far better
//! than no line at all.

/// The 1-based number of the first line that contains one of `needles`
/// (tried in order).
pub fn line_of(source: &str, needles: &[&str]) -> Option<usize> {
    needles.iter().find_map(|needle| {
        if needle.is_empty() {
            return None;
        }
        source
            .lines()
            .position(|line| line.contains(needle) && !line.trim_start().starts_with("--"))
            .map(|i| i + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_mention_outside_comments() {
        let src = "-- pool = \"web\"\nreturn {\n  pool = \"web\",\n}\n";
        assert_eq!(line_of(src, &["\"web\""]), Some(3));
        assert_eq!(line_of(src, &["nope", "return"]), Some(2));
        assert_eq!(line_of(src, &["nope"]), None);
    }
}
