//! Finding the line a table value came from. Lua tables keep no line
//! numbers, so the policy's text is read a second time, as tokens: every
//! field of every table constructor is noted with its line and the keys of
//! the tables around it. A value is then found by its path (`pools`,
//! `static`, `balance`): the field whose enclosing keys match most of the
//! path wins. A plain text search put `balance = 5` at the line `local
//! static = pocket.regex ...` because it mentions `static =`.

/// The 1-based number of the first line that contains one of `needles`
/// (tried in order): the last resort when a value has no place in the
/// text (a table built in a loop, say).
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

/// One step of a path: a key (`balance`) or, written `[2]`, the second
/// item of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

impl Step {
    fn parse(text: &str) -> Step {
        match text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
        {
            Some(n) => Step::Index(n),
            None => Step::Key(text.to_string()),
        }
    }
}

/// A field of a table constructor: its key (or list position), its line,
/// and the keys of the constructors around it, outermost first (None: a
/// constructor that is a call's argument or `return`ed).
#[derive(Debug)]
struct Field {
    step: Step,
    line: usize,
    around: Vec<Option<Step>>,
}

/// The fields of every table constructor in a policy's text.
#[derive(Debug, Default)]
pub struct Places {
    fields: Vec<Field>,
}

impl Places {
    /// Reads `source` (never fails: text it cannot read ends the scan).
    pub fn of(source: &str) -> Places {
        Places {
            fields: fields(&tokens(source)),
        }
    }

    /// The line of the value at `path` (`["pools", "app", "servers",
    /// "[2]"]`); when the text has no such field, the line of the nearest
    /// table on the path that it has.
    pub fn line(&self, path: &[&str]) -> Option<usize> {
        let steps: Vec<Step> = path.iter().map(|s| Step::parse(s)).collect();
        (1..=steps.len())
            .rev()
            .find_map(|n| self.exact(&steps[..n]))
    }

    /// The line of the value at `path`, only if the text has that field
    /// inside tables with all of the path's keys.
    pub fn exact_line(&self, path: &[&str]) -> Option<usize> {
        let steps: Vec<Step> = path.iter().map(|s| Step::parse(s)).collect();
        self.best(&steps)
            .filter(|&(score, _)| score + 1 == steps.len())
            .map(|(_, line)| line)
    }

    fn exact(&self, steps: &[Step]) -> Option<usize> {
        self.best(steps).map(|(_, line)| line)
    }

    /// The field at the end of `steps` whose enclosing keys match most of
    /// the rest: (how many matched, its line).
    fn best(&self, steps: &[Step]) -> Option<(usize, usize)> {
        let (last, outer) = steps.split_last()?;
        let mut best: Option<(usize, usize)> = None;
        for f in self.fields.iter().filter(|f| &f.step == last) {
            let score = outer
                .iter()
                .rev()
                .zip(f.around.iter().rev())
                .take_while(|(want, have)| have.as_ref() == Some(*want))
                .count();
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, f.line));
            }
        }
        best
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Str(String),
    Other(String),
}

/// Lua's tokens with their lines; comments dropped, numbers and
/// operators kept only as `Other`.
fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    // `[==[` at `i`: the number of `=`, if it opens a long bracket.
    let long_open = |i: usize| -> Option<usize> {
        if b.get(i) != Some(&b'[') {
            return None;
        }
        let mut j = i + 1;
        while b.get(j) == Some(&b'=') {
            j += 1;
        }
        (b.get(j) == Some(&b'[')).then_some(j - i - 1)
    };
    // Skips a long bracket of `level` opened at `i`; returns its text and
    // the index after it.
    let long_body = |i: usize, level: usize, line: &mut usize| -> (String, usize) {
        let start = i + level + 2;
        let close: Vec<u8> = std::iter::once(b']')
            .chain(std::iter::repeat_n(b'=', level))
            .chain(std::iter::once(b']'))
            .collect();
        let mut j = start;
        while j < b.len() && !b[j..].starts_with(&close) {
            if b[j] == b'\n' {
                *line += 1;
            }
            j += 1;
        }
        let text = String::from_utf8_lossy(&b[start..j.min(b.len())]).into_owned();
        (text, (j + close.len()).min(b.len()))
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                if let Some(level) = long_open(i + 2) {
                    i = long_body(i + 2, level, &mut line).1;
                } else {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
            }
            b'"' | b'\'' => {
                let at = line;
                let mut j = i + 1;
                let mut text = Vec::new();
                while j < b.len() && b[j] != c {
                    if b[j] == b'\\' && j + 1 < b.len() {
                        if b[j + 1] == b'\n' {
                            line += 1;
                        }
                        text.push(b[j + 1]);
                        j += 2;
                        continue;
                    }
                    if b[j] == b'\n' {
                        line += 1;
                    }
                    text.push(b[j]);
                    j += 1;
                }
                out.push((Tok::Str(String::from_utf8_lossy(&text).into_owned()), at));
                i = j + 1;
            }
            b'[' if long_open(i).is_some() => {
                let at = line;
                let level = long_open(i).unwrap_or(0);
                let (text, next) = long_body(i, level, &mut line);
                out.push((Tok::Str(text), at));
                i = next;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                out.push((
                    Tok::Name(String::from_utf8_lossy(&b[i..j]).into_owned()),
                    line,
                ));
                i = j;
            }
            c if c.is_ascii_digit() => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.') {
                    j += 1;
                }
                out.push((Tok::Other("0".into()), line));
                i = j;
            }
            b'=' | b'~' | b'<' | b'>' if b.get(i + 1) == Some(&b'=') => {
                out.push((Tok::Other("==".into()), line));
                i += 2;
            }
            _ => {
                out.push((Tok::Other((c as char).to_string()), line));
                i += 1;
            }
        }
    }
    out
}

enum Frame {
    /// A table constructor: its key, how many list items it has had, and
    /// whether the next token starts a field.
    Table {
        key: Option<Step>,
        items: usize,
        at_field: bool,
    },
    /// `( ... )` or `[ ... ]`: commas inside do not separate fields.
    Group,
}

fn is(t: Option<&(Tok, usize)>, s: &str) -> bool {
    matches!(t, Some((Tok::Other(o), _)) if o == s)
}

/// For a table passed to a call written as a field (`cache = cdn.tier {`
/// at `i`), the field's key: the table is that field's value in effect.
fn call_key(toks: &[(Tok, usize)], i: usize) -> Option<Step> {
    let mut j = i.checked_sub(1)?;
    if !matches!(toks[j].0, Tok::Name(_)) {
        return None;
    }
    while j >= 2 && (is(toks.get(j - 1), ".") || is(toks.get(j - 1), ":")) {
        if !matches!(toks[j - 2].0, Tok::Name(_)) {
            return None;
        }
        j -= 2;
    }
    if j >= 2 && is(toks.get(j - 1), "=") {
        if let Tok::Name(n) = &toks[j - 2].0 {
            return Some(Step::Key(n.clone()));
        }
    }
    None
}

fn fields(toks: &[(Tok, usize)]) -> Vec<Field> {
    let mut out = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let around = |stack: &[Frame]| -> Vec<Option<Step>> {
        stack
            .iter()
            .filter_map(|f| match f {
                Frame::Table { key, .. } => Some(key.clone()),
                Frame::Group => None,
            })
            .collect()
    };
    for i in 0..toks.len() {
        let (tok, line) = &toks[i];
        // A field starts here: note it (and, for a list item, its place).
        let mut item_key = None;
        if let Some(Frame::Table {
            items, at_field, ..
        }) = stack.last_mut()
        {
            if *at_field && !is(Some(&toks[i]), "}") {
                *at_field = false;
                let keyed = match tok {
                    Tok::Name(n) if is(toks.get(i + 1), "=") => Some(Step::Key(n.clone())),
                    Tok::Other(o) if o == "[" => match (toks.get(i + 1), toks.get(i + 2)) {
                        (Some((Tok::Str(s), _)), Some((Tok::Other(c), _))) if c == "]" => {
                            Some(Step::Key(s.clone()))
                        }
                        _ => None,
                    },
                    _ => None,
                };
                let step = match keyed {
                    Some(k) => k,
                    None => {
                        *items += 1;
                        let step = Step::Index(*items);
                        item_key = Some(step.clone());
                        step
                    }
                };
                let around = around(&stack);
                out.push(Field {
                    step,
                    line: *line,
                    around,
                });
            }
        }
        match tok {
            Tok::Other(o) if o == "{" => {
                let key = if item_key.is_some() {
                    item_key
                } else if i >= 2 && is(toks.get(i - 1), "=") {
                    match &toks[i - 2].0 {
                        Tok::Name(n) => Some(Step::Key(n.clone())),
                        Tok::Other(c) if c == "]" && i >= 3 => match &toks[i - 3].0 {
                            Tok::Str(s) => Some(Step::Key(s.clone())),
                            _ => None,
                        },
                        _ => None,
                    }
                } else {
                    call_key(toks, i)
                };
                stack.push(Frame::Table {
                    key,
                    items: 0,
                    at_field: true,
                });
            }
            Tok::Other(o) if o == "}" => {
                while let Some(Frame::Group) = stack.last() {
                    stack.pop();
                }
                stack.pop();
            }
            Tok::Other(o) if o == "(" || o == "[" => stack.push(Frame::Group),
            Tok::Other(o) if o == ")" || o == "]" => {
                if let Some(Frame::Group) = stack.last() {
                    stack.pop();
                }
            }
            Tok::Other(o) if o == "," || o == ";" => {
                if let Some(Frame::Table { at_field, .. }) = stack.last_mut() {
                    *at_field = true;
                }
            }
            _ => {}
        }
    }
    out
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

    #[test]
    fn a_value_is_found_by_its_path_not_by_a_mention() {
        let src = r#"local static = pocket.regex [[^/static/]]
-- balance = "x" in a comment
return {
  listeners = { { bind = "127.0.0.1:8080", pool = "static" },
                { name = "b", bind = "127.0.0.1:8081" } },
  pools = {
    app = { servers = { "127.0.0.1:9001" }, balance = "least_conn" },
    static = {
      servers = { "127.0.0.1:9002", "unix:/x" },
      balance = 5,
      ["odd name"] = { },
    },
  },
}
"#;
        let p = Places::of(src);
        assert_eq!(p.line(&["pools", "static", "balance"]), Some(10));
        assert_eq!(p.line(&["pools", "app", "balance"]), Some(7));
        assert_eq!(p.line(&["pools", "static"]), Some(8));
        assert_eq!(p.line(&["pools", "static", "servers", "[2]"]), Some(9));
        assert_eq!(p.line(&["listeners", "[2]", "bind"]), Some(5));
        assert_eq!(p.line(&["listeners", "[1]", "pool"]), Some(4));
        // Missing: the nearest table that is there.
        assert_eq!(p.line(&["pools", "static", "timeouts"]), Some(8));
        assert_eq!(p.line(&["pools", "static", "odd name"]), Some(11));
    }

    #[test]
    fn tables_kept_in_locals_are_found_too() {
        let src = "local web = {\n  servers = { \"127.0.0.1:9001\" },\n  retries = -1,\n}\nreturn { pools = { web = web } }\n";
        let p = Places::of(src);
        assert_eq!(p.line(&["pools", "web", "retries"]), Some(3));
    }

    #[test]
    fn a_table_given_to_a_call_is_its_fields_value() {
        let src = r#"return { pools = {
  origin = { servers = { "127.0.0.1:1" }, fallback = "x" },
  cache = cdn.tier {
    fallback = "origin",
  },
} }
"#;
        let p = Places::of(src);
        assert_eq!(p.line(&["pools", "cache", "fallback"]), Some(4));
    }
}
