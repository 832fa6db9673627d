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
    /// The name the outermost constructor is kept under, when it is not
    /// the policy's own table: `first` for `local first = { ... }`,
    /// `fast()` for the table `local function fast()` returns.
    root: Option<String>,
}

/// A field whose value is a name (`x = first`) or a call (`app =
/// fast("...")`): the table kept under that name is its value.
#[derive(Debug)]
struct Ref {
    path: Vec<Option<Step>>,
    target: String,
    root: Option<String>,
}

/// The fields of every table constructor in a policy's text.
#[derive(Debug, Default)]
pub struct Places {
    fields: Vec<Field>,
    refs: Vec<Ref>,
    /// `return policy` at the chunk's end: the table kept in `policy` is
    /// the policy's own.
    main: Option<String>,
    /// `local pools = require "lib.pools"`: (local, module name).
    requires: Vec<(String, String)>,
    /// [`Places::prefixes`] already worked out, by name.
    prefixes: std::cell::RefCell<std::collections::HashMap<String, PathsTo>>,
}

/// Paths from the policy's table to one kept table.
type PathsTo = std::rc::Rc<Vec<Vec<Option<Step>>>>;

/// A step of the search for paths: the name a table is kept under, the
/// path inside it after the table itself, the names already passed.
type Visit<'a> = (Option<&'a str>, Vec<Option<Step>>, Vec<&'a str>);

/// How many fields naming a kept table are followed, in all, to find
/// the paths to one table: tables that name each other many times
/// would otherwise give (fields)^depth paths.
const MAX_STEPS: usize = 10_000;

impl Places {
    /// Reads `source` (never fails: text it cannot read ends the scan).
    pub fn of(source: &str) -> Places {
        let (fields, refs, main, requires) = fields(&tokens(source));
        Places {
            fields,
            refs,
            main,
            requires,
            prefixes: Default::default(),
        }
    }

    /// The paths from the policy's table to a field's table: its own
    /// when it is written inside the returned table, else one through
    /// each field that names the local (or calls the function) it is
    /// kept in. Followed a few names deep.
    /// Where the value at `path` comes from when the policy takes it from
    /// a module (`web = pools.web`, `pools = require "lib.pools"`): the
    /// module's name as `require` got it, and the path inside the table
    /// the module returns.
    pub fn from_module(&self, path: &[&str]) -> Option<(String, Vec<String>)> {
        let steps: Vec<Step> = path.iter().map(|s| Step::parse(s)).collect();
        for r in &self.refs {
            let (local, key) = match r.target.split_once('.') {
                Some((l, k)) => (l, Some(k)),
                None => (r.target.as_str(), None),
            };
            let Some((_, module)) = self.requires.iter().find(|(l, _)| l == local) else {
                continue;
            };
            for p in self.expand(r.root.as_deref(), &r.path) {
                let n = p.len() - 1;
                let prefix = n <= steps.len()
                    && p[0].is_none()
                    && p[1..]
                        .iter()
                        .zip(&steps)
                        .all(|(have, want)| have.as_ref() == Some(want));
                if prefix {
                    let inner: Vec<String> = key
                        .map(str::to_string)
                        .into_iter()
                        .chain(steps[n..].iter().map(|s| match s {
                            Step::Key(k) => k.clone(),
                            Step::Index(i) => format!("[{i}]"),
                        }))
                        .collect();
                    return Some((module.clone(), inner));
                }
            }
        }
        None
    }

    fn paths_of(&self, f: &Field) -> Vec<Vec<Option<Step>>> {
        self.expand(f.root.as_deref(), &f.around)
    }

    /// The paths to a table kept under `root` with `around` inside it:
    /// every way from the policy's table to `root` (computed once per
    /// name), each followed by the rest of `around`.
    fn expand(&self, root: Option<&str>, around: &[Option<Step>]) -> Vec<Vec<Option<Step>>> {
        let Some(root) = root else {
            return vec![around.to_vec()];
        };
        let rest = around.get(1..).unwrap_or(&[]);
        let prefixes = self.prefixes(root);
        prefixes
            .iter()
            .map(|p| p.iter().chain(rest).cloned().collect())
            .collect()
    }

    /// The paths from the policy's table to the table kept under `name`,
    /// breadth first, shortest first: through each field that names it,
    /// a few names deep, never through a name twice on one path (tables
    /// that name each other), and at most [`MAX_STEPS`] in all. A policy
    /// past the cap gets the paths found so far: its errors fall back to
    /// the line of a table further out, never to a hang.
    fn prefixes(&self, name: &str) -> PathsTo {
        if let Some(found) = self.prefixes.borrow().get(name) {
            return found.clone();
        }
        let mut out: Vec<Vec<Option<Step>>> = Vec::new();
        let mut queue: std::collections::VecDeque<Visit> =
            std::collections::VecDeque::from([(Some(name), Vec::new(), Vec::new())]);
        let mut steps = 0usize;
        while let Some((root, rest, chain)) = queue.pop_front() {
            let Some(root) = root else {
                out.push(rest);
                continue;
            };
            if self.main.as_deref() == Some(root) {
                out.push(std::iter::once(None).chain(rest.iter().cloned()).collect());
            }
            if chain.len() > 4 {
                continue;
            }
            for r in self.refs.iter().filter(|r| r.target == root) {
                let from = r.root.as_deref();
                if from.is_some_and(|f| f == root || chain.contains(&f)) {
                    continue;
                }
                steps += 1;
                if steps > MAX_STEPS {
                    queue.clear();
                    break;
                }
                // The ref's own field may itself sit in a kept table.
                let mut p = match from {
                    Some(_) => r.path.get(1..).unwrap_or(&[]).to_vec(),
                    None => r.path.clone(),
                };
                p.extend_from_slice(&rest);
                let mut next = chain.clone();
                next.push(root);
                queue.push_back((from, p, next));
            }
        }
        let out = std::rc::Rc::new(out);
        self.prefixes
            .borrow_mut()
            .insert(name.to_string(), out.clone());
        out
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

    /// The keys the text writes in the table at `path` (`["pools"]`: the
    /// pools' names), in the policy's own table.
    pub fn keys(&self, path: &[&str]) -> Vec<String> {
        let steps: Vec<Step> = path.iter().map(|s| Step::parse(s)).collect();
        let mut out: Vec<String> = Vec::new();
        for f in &self.fields {
            let Step::Key(k) = &f.step else { continue };
            let inside = self.paths_of(f).iter().any(|p| {
                p.len() == steps.len() + 1
                    && p[0].is_none()
                    && p[1..]
                        .iter()
                        .zip(&steps)
                        .all(|(have, want)| have.as_ref() == Some(want))
            });
            if inside && !out.contains(k) {
                out.push(k.clone());
            }
        }
        out
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

    /// The field at the end of `steps` whose enclosing keys are all of
    /// the rest, from the policy's table down: (how many matched, its
    /// line). A key written twice in one table is Lua's last one, so the
    /// last such field wins. A field with the same key elsewhere is never
    /// taken: no line is better than a wrong one.
    fn best(&self, steps: &[Step]) -> Option<(usize, usize)> {
        let (last, outer) = steps.split_last()?;
        let mut best: Option<(usize, usize)> = None;
        for f in self.fields.iter().filter(|f| &f.step == last) {
            let exact = self.paths_of(f).iter().any(|p| {
                p.len() == outer.len() + 1
                    && p[0].is_none()
                    && p[1..]
                        .iter()
                        .zip(outer)
                        .all(|(have, want)| have.as_ref() == Some(want))
            });
            if exact {
                best = Some((outer.len(), f.line));
            }
        }
        best
    }
}

/// Whether Lua `src` may reach the global `http` table (sub-requests):
/// the name `http` as a Lua name (`http.get`, `local web = http`,
/// `f(http)`; not a field such as `x.http`, but `_G.http` is),
/// `require("http")`, `_G["http"]`, the string `"pocket.http"`
/// (`require("pocket.http")`), or `pocket.http`. Strings such as `"http://x"` and
/// comments do not count. A false positive (a table key `http = ...`)
/// only costs running `on_request` as a coroutine.
pub fn names_http(src: &str) -> bool {
    let toks = tokens(src);
    let is = |i: usize, t: &str| matches!(toks.get(i), Some((Tok::Other(o), _)) if o == t);
    let name = |i: usize, n: &str| matches!(toks.get(i), Some((Tok::Name(m), _)) if m == n);
    toks.iter().enumerate().any(|(i, (tok, _))| match tok {
        Tok::Name(n) if n == "http" => {
            let field = i > 0 && (is(i - 1, ".") || is(i - 1, ":"));
            !field || (i > 1 && is(i - 1, ".") && (name(i - 2, "_G") || name(i - 2, "pocket")))
        }
        // "http" only where it names the module or the global: a
        // scheme comparison (`req.scheme == "http"`) does not count.
        Tok::Str(s) if s == "http" => {
            (i > 0 && name(i - 1, "require"))
                || (i > 1 && is(i - 1, "(") && name(i - 2, "require"))
                || (i > 1 && is(i - 1, "[") && name(i - 2, "_G"))
        }
        Tok::Str(s) => s == "pocket.http",
        _ => false,
    })
}

/// Whether Lua text reads `conn.sni` or `conn.alpn`: it has `sni` or
/// `alpn` as a name (`conn.sni`, `local sni = ...`) or a string
/// (`conn["sni"]`). Comments do not count. A false positive only costs
/// running `on_connect` as a coroutine on `tcp` listeners; a name built at
/// run time (`conn["s" .. "ni"]`) is missed and reads nil.
pub fn names_client_hello(src: &str) -> bool {
    tokens(src).iter().any(|(tok, _)| match tok {
        Tok::Name(n) | Tok::Str(n) => n == "sni" || n == "alpn",
        _ => false,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Str(String),
    Num(String),
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
                out.push((
                    Tok::Num(String::from_utf8_lossy(&b[i..j]).into_owned()),
                    line,
                ));
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

fn is_name(t: Option<&(Tok, usize)>, s: &str) -> bool {
    matches!(t, Some((Tok::Name(n), _)) if n == s)
}

/// What a value that starts at `i` refers to: `first` for a plain name,
/// `fast()` for a call of a name, none for anything else.
fn ref_target(toks: &[(Tok, usize)], i: usize) -> Option<String> {
    let Some((Tok::Name(n), _)) = toks.get(i) else {
        return None;
    };
    if ["function", "nil", "true", "false", "not"].contains(&n.as_str()) {
        return None;
    }
    let next = toks.get(i + 1);
    let ends = |t: Option<&(Tok, usize)>| t.is_none() || is(t, ",") || is(t, ";") || is(t, "}");
    if ends(next) {
        Some(n.clone())
    } else if let (true, Some((Tok::Name(k), _))) = (is(next, "."), toks.get(i + 2)) {
        // `pools.web`: a field of a module's table.
        ends(toks.get(i + 3)).then(|| format!("{n}.{k}"))
    } else if is(next, "(") {
        Some(format!("{n}()"))
    } else {
        None
    }
}

/// The fields of every table constructor, the fields whose values name
/// a kept table, and the name of the table `return`ed by the chunk.
type Scan = (Vec<Field>, Vec<Ref>, Option<String>, Vec<(String, String)>);

fn fields(toks: &[(Tok, usize)]) -> Scan {
    let mut out = Vec::new();
    let mut requires = Vec::new();
    let mut refs = Vec::new();
    let mut main = None;
    let mut stack: Vec<Frame> = Vec::new();
    // The name the outermost open constructor is kept under.
    let mut root: Option<String> = None;
    // Blocks (`function`, `if`, `do`, `repeat` ... `end`/`until`) and the
    // functions among them, with the block depth each opened at.
    let mut depth = 0usize;
    let mut funcs: Vec<(String, usize)> = Vec::new();
    let around = |stack: &[Frame]| -> Vec<Option<Step>> {
        stack
            .iter()
            .filter_map(|f| match f {
                Frame::Table { key, .. } => Some(key.clone()),
                Frame::Group => None,
            })
            .collect()
    };
    let in_table = |stack: &[Frame]| stack.iter().any(|f| matches!(f, Frame::Table { .. }));
    for i in 0..toks.len() {
        let (tok, line) = &toks[i];
        if let Tok::Name(n) = tok {
            // `local x = require "m"` / `require("m")` / `require 'm'`.
            if n == "require" && i >= 2 && is(toks.get(i - 1), "=") {
                let module = match (toks.get(i + 1), toks.get(i + 2)) {
                    (Some((Tok::Str(m), _)), _) => Some(m.clone()),
                    (Some((Tok::Other(o), _)), Some((Tok::Str(m), _))) if o == "(" => {
                        Some(m.clone())
                    }
                    _ => None,
                };
                if let (Some(m), Tok::Name(local)) = (module, &toks[i - 2].0) {
                    requires.push((local.clone(), m));
                }
            }
            match n.as_str() {
                "function" => {
                    depth += 1;
                    let name = if let Some((Tok::Name(f), _)) = toks.get(i + 1) {
                        // `function M.f(` / `function f(`: the last name.
                        let mut j = i + 1;
                        let mut f = f.clone();
                        while is(toks.get(j + 1), ".") || is(toks.get(j + 1), ":") {
                            match toks.get(j + 2) {
                                Some((Tok::Name(g), _)) => f = g.clone(),
                                _ => break,
                            }
                            j += 2;
                        }
                        f
                    } else if i >= 2 && is(toks.get(i - 1), "=") {
                        match &toks[i - 2].0 {
                            Tok::Name(f) => f.clone(),
                            _ => String::new(),
                        }
                    } else {
                        String::new()
                    };
                    funcs.push((name, depth));
                }
                "if" | "do" | "repeat" => depth += 1,
                "end" | "until" => {
                    if funcs.last().is_some_and(|(_, d)| *d == depth) {
                        funcs.pop();
                    }
                    depth = depth.saturating_sub(1);
                }
                "return" if funcs.is_empty() && !in_table(&stack) => {
                    if let (Some((Tok::Name(m), _)), true) =
                        (toks.get(i + 1), ref_target(toks, i + 1).is_some())
                    {
                        if !is(toks.get(i + 2), "(") {
                            main = Some(m.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        // A field starts here: note it (and, for a list item, its place).
        let mut item_key = None;
        if let Some(Frame::Table {
            items, at_field, ..
        }) = stack.last_mut()
        {
            if *at_field && !is(Some(&toks[i]), "}") {
                *at_field = false;
                let keyed = match tok {
                    Tok::Name(n) if is(toks.get(i + 1), "=") => Some((Step::Key(n.clone()), 2)),
                    Tok::Other(o) if o == "[" => match (toks.get(i + 1), toks.get(i + 2)) {
                        (Some((Tok::Str(s), _)), Some((Tok::Other(c), _))) if c == "]" => {
                            Some((Step::Key(s.clone()), 4))
                        }
                        (Some((Tok::Num(n), _)), Some((Tok::Other(c), _))) if c == "]" => {
                            n.parse().ok().map(|n| (Step::Index(n), 4))
                        }
                        _ => None,
                    },
                    _ => None,
                };
                let (step, value_at) = match keyed {
                    Some(k) => k,
                    None => {
                        *items += 1;
                        let step = Step::Index(*items);
                        item_key = Some(step.clone());
                        (step, 0)
                    }
                };
                let around = around(&stack);
                if let Some(target) = ref_target(toks, i + value_at) {
                    let mut path = around.clone();
                    path.push(Some(step.clone()));
                    refs.push(Ref {
                        path,
                        target,
                        root: root.clone(),
                    });
                }
                out.push(Field {
                    step,
                    line: *line,
                    around,
                    root: root.clone(),
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
                            Tok::Num(n) => n.parse().ok().map(Step::Index),
                            _ => None,
                        },
                        _ => None,
                    }
                } else {
                    call_key(toks, i)
                };
                if !in_table(&stack) {
                    let returned = i >= 1 && is_name(toks.get(i - 1), "return");
                    root = if returned && funcs.is_empty() {
                        None
                    } else if returned {
                        funcs.last().map(|(f, _)| format!("{f}()"))
                    } else {
                        match (&key, i >= 3 && is(toks.get(i - 3), ".")) {
                            (Some(Step::Key(k)), false) => Some(k.clone()),
                            _ => Some(String::new()),
                        }
                    };
                }
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
    (out, refs, main, requires)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_http_finds_the_global_however_it_is_spelt() {
        use super::names_http;
        for yes in [
            "http.get(x)",
            "local web = http\nweb.get(x)",
            "local h = require(\"pocket.http\")",
            "local h = require 'http'",
            "f(_G.http)",
            "local t = _G[\"http\"]",
            "local g = pocket.http",
            "return { on_request = function() return http['get'](u) end }",
        ] {
            assert!(names_http(yes), "{yes}");
        }
        for no in [
            "local u = \"http://127.0.0.1/x\"",
            "-- http.get is not used here",
            "--[[ http.get ]] local x = 1",
            "local s = req.http",
            "local https = 1",
            "local u = [[http.get]]",
            "if req.scheme == \"http\" then end",
        ] {
            assert!(!names_http(no), "{no}");
        }
    }

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

    #[test]
    fn locals_and_functions_are_followed_to_their_own_table() {
        let src = r#"local first = { servers={"127.0.0.1:9001"}, retries = 1 }
local second = { servers={"127.0.0.1:9002"},
  retries = 99 }
local function fast(addr)
  return { servers={addr}, balance = "least_conn", retries = 1 }
end
local slow = { servers={"127.0.0.1:9003"},
  balance = 5,
  retries = 20 }
return { listeners = {}, pools = { x = first, y = second,
  app = fast("127.0.0.1:9001"), static = slow } }
"#;
        let p = Places::of(src);
        assert_eq!(p.line(&["pools", "y", "retries"]), Some(3));
        assert_eq!(p.line(&["pools", "x", "retries"]), Some(1));
        assert_eq!(p.line(&["pools", "app", "balance"]), Some(5));
        assert_eq!(p.line(&["pools", "static", "balance"]), Some(8));
        assert_eq!(p.line(&["pools", "static", "retries"]), Some(9));
    }

    #[test]
    fn the_last_of_a_key_written_twice_wins_and_a_stranger_is_never_taken() {
        let src = "return { pools = {\n  b = { retries = 3 },\n  a = { retries = 1 },\n  a = { retries = 20 },\n  [1] = { },\n} }\n";
        let p = Places::of(src);
        assert_eq!(p.line(&["pools", "a", "retries"]), Some(4));
        assert_eq!(p.line(&["pools", "c", "retries"]), Some(1));
        assert_eq!(p.line(&["pools", "[1]"]), Some(5));
    }

    #[test]
    fn many_names_for_one_table_are_followed_within_a_cap() {
        // Five tables, each naming the next 40 times: 40^5 paths if every
        // one were followed.
        let mut src = String::from("local t5 = { retries = 99 }\n");
        for n in (1..5).rev() {
            src.push_str(&format!("local t{n} = {{"));
            for k in 0..40 {
                src.push_str(&format!(" k{k} = t{},", n + 1));
            }
            src.push_str(" }\n");
        }
        src.push_str("return { pools = { app = t1, web = t5 } }\n");
        let p = Places::of(&src);
        assert_eq!(p.line(&["pools", "web", "retries"]), Some(1));
        assert_eq!(p.line(&["pools", "app", "k3", "k0"]), Some(4));
    }
}
