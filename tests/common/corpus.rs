//! What the corpus tests (tests/http_parsing.rs, tests/http_responses.rs)
//! share: where the corpus lies, how its files are listed, and how an
//! llhttp case becomes the bytes llhttp's own test runner feeds its parser.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regex::{Captures, Regex};

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

pub fn sorted_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// Makes ids unique within a file ("name", "name (2)", ...).
pub fn unique_id(seen: &mut HashMap<String, usize>, base: String) -> String {
    let n = seen.entry(base.clone()).or_insert(0);
    *n += 1;
    if *n == 1 {
        base
    } else {
        format!("{base} ({n})")
    }
}

/// The bytes llhttp's test runner (test/md-test.ts) feeds the parser for
/// an ```http block: same substitutions, in the same order, then UTF-8.
pub fn llhttp_input(block: &str) -> Vec<u8> {
    let s = Regex::new(r"\\(\r\n|\r|\n)")
        .unwrap()
        .replace_all(block, "");
    let s = Regex::new(r"\r\n|\r|\n").unwrap().replace_all(&s, "\r\n");
    let s = s
        .replace("\\r", "\r")
        .replace("\\n", "\n")
        .replace("\\t", "\t")
        .replace("\\f", "\x0c");
    let code = |radix: u32| {
        move |c: &Captures| {
            let n = u32::from_str_radix(&c[1], radix).unwrap_or(0xfffd);
            char::from_u32(n).unwrap_or('\u{fffd}').to_string()
        }
    };
    let s = Regex::new(r"\\x([0-9a-fA-F]+)")
        .unwrap()
        .replace_all(&s, code(16));
    let s = Regex::new(r"\\([0-7]{1,3})")
        .unwrap()
        .replace_all(&s, code(8));
    assert!(
        !s.contains("${"),
        "inline JavaScript is not supported: {block}"
    );
    s.into_owned().into_bytes()
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The outcomes of cases run on lanes, each lane giving back `(case index,
/// outcome)` pairs, in case order; panics if a lane failed or a case did
/// not run.
pub async fn gather<T: 'static>(
    mut lanes: tokio::task::JoinSet<Vec<(usize, T)>>,
    cases: usize,
) -> Vec<T> {
    let mut outcomes: Vec<Option<T>> = (0..cases).map(|_| None).collect();
    while let Some(done) = lanes.join_next().await {
        for (i, out) in done.expect("lane task") {
            outcomes[i] = Some(out);
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every case ran"))
        .collect()
}
