//! Durations as users write them in policies: `"250ms"`, `"2s"`, `"1m"`, or
//! a plain number of seconds.

use std::time::Duration;

/// Parses `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"` or `"3"` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    // A message echoes at most 80 characters of what was written.
    let text = match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    };
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    if num.len() != num.trim_end().len() && !num.trim().is_empty() {
        return Err(format!(
            "\"{text}\" is not a duration: write the number and its unit together, like \"{}{}\"",
            num.trim(),
            &t[num.len()..]
        ));
    }
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("\"{text}\" is not a duration (try \"250ms\", \"2s\", \"1m\")"))?;
    seconds_to_duration(value * scale).ok_or_else(|| format!("\"{text}\" is out of range"))
}

/// A number of seconds, refusing negative, NaN and absurd values (over a day).
pub fn seconds_to_duration(secs: f64) -> Option<Duration> {
    if secs.is_finite() && (0.0..=86_400.0).contains(&secs) {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("fast").is_err());
        assert_eq!(
            parse_duration("2 s").unwrap_err(),
            "\"2 s\" is not a duration: write the number and its unit together, like \"2s\""
        );
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("100000h").is_err());
    }
}
