//! The Lua in the docs and the examples is Pocket's Lua, checked by Pocket
//! itself, so a page cannot drift from the code unnoticed.
//!
//! Every ```` ```lua ```` block of README.md, docs/*.md and
//! examples/**/README.md is checked, and a failure names the page and the
//! line of the block. How a block is checked depends on what it is:
//!
//! - **A policy**: a line that starts with `return {` (in column 0) and a
//!   `listeners` key. It goes through the real `pocket check`, and through
//!   `pocket test` too when it has `tests = {`.
//! - **Pools**: a block whose first code line starts with `pools = {`. It is
//!   put in a policy with one listener and goes through `pocket check`, so
//!   every key and value in it must be valid. A pool it names but does not
//!   define (a `fallback`, say) is an error: define it in the block.
//! - **An excerpt of a policy**: top-level `local` lines, then keys of the
//!   policy table at column 0 (`on_request = function(req) ... end,`). The
//!   keys are put in `return { listeners = ..., KEYS }` and the whole goes
//!   through `pocket check`: the top-level code runs, the keys are
//!   validated.
//! - **Anything else is a fragment** (a hook, a few table keys, a lab
//!   scenario, statements, an expression): Pocket compiles it, as table
//!   fields, as statements or as an expression, inside a function that is
//!   never called. Only its syntax is checked.
//!
//! To have a block compiled only, whatever it looks like, start it with a
//! comment line containing `fragment` (`-- fragment: inside a pool`). A
//! block with a lab placeholder (`{{listen}}`, `{{A}}`) is a lab scenario,
//! and is compiled only too (tests/lab.rs runs the real scenarios).
//!
//! Every example's policy (examples/*/policy.lua) goes through
//! `pocket check` and `pocket test`, has tests, and every rule that names a
//! pool is covered: the pool swapped for another pool of the policy makes
//! `pocket test` fail. A README's `PATH: N passed, 0 failed` line must be
//! what `pocket test PATH` prints. The TCP-mode examples
//! (examples/tcp/*.lua, no `tests`: `pocket test` runs HTTP requests) go
//! through `pocket check`, and tests/tcp_examples.rs must run each. Every
//! relative link of those pages leads to a file, and to a heading of it
//! when it names one.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A path relative to the repository, as a failure names it.
fn shown(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

fn readmes_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            readmes_under(&p, out);
        } else if p.file_name().is_some_and(|n| n == "README.md") {
            out.push(p);
        }
    }
}

/// README.md, docs/*.md and examples/**/README.md.
fn doc_pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    readmes_under(&root().join("examples"), &mut pages);
    pages
}

struct Block {
    page: PathBuf,
    /// The page's line of the block's first line of code (1-based).
    line: usize,
    text: String,
}

impl Block {
    fn at(&self, line_in_block: usize) -> String {
        format!(
            "{}:{}",
            shown(&self.page),
            self.line + line_in_block.saturating_sub(1)
        )
    }
}

fn lua_blocks(page: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(page).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        if let Some(info) = fence.strip_prefix("```") {
            let lua = info.trim() == "lua";
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && lines[end].trim() != "```" {
                end += 1;
            }
            if lua {
                out.push(Block {
                    page: page.to_path_buf(),
                    line: start + 1,
                    text: lines[start..end.min(lines.len())].join("\n") + "\n",
                });
            }
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}

enum Kind {
    Policy,
    Pools,
    /// Top-level statements, then keys of the policy table: the line of
    /// the first key (0-based).
    Excerpt(usize),
    Fragment,
}

/// `name = ...` at column 0: a key of the policy table.
fn is_key_line(l: &str) -> bool {
    let Some((name, _)) = l.split_once(" = ") else {
        return false;
    };
    !name.is_empty()
        && !l.starts_with("local ")
        && name
            .trim_end()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn kind(text: &str) -> Kind {
    let first = text.lines().next().unwrap_or("");
    // A lab scenario's policy has placeholders (`{{listen}}`): not a policy.
    if (first.trim_start().starts_with("--") && first.contains("fragment")) || text.contains("{{") {
        return Kind::Fragment;
    }
    if text.lines().any(|l| l.starts_with("return {")) && text.contains("listeners") {
        return Kind::Policy;
    }
    let first_code = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("--"));
    if first_code.is_some_and(|l| l.starts_with("pools = {")) {
        return Kind::Pools;
    }
    let lines: Vec<&str> = text.lines().collect();
    if let Some(local) = lines.iter().position(|l| l.starts_with("local ")) {
        if let Some(key) = lines[local..].iter().position(|l| is_key_line(l)) {
            return Kind::Excerpt(local + key);
        }
    }
    Kind::Fragment
}

/// Runs `pocket check` (or another subcommand) on `source` written to a
/// fresh folder; Err: Pocket's output with `policy.lua:N` turned into the
/// page's line (`offset` lines of wrapper come before the block).
fn pocket_on(cmd: &str, source: &str, block: &Block, offset: usize) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", source);
    let (code, out, err) = pocket_cmd(&[cmd, path.to_str().unwrap()]);
    if code == 0 && !out.contains("FAIL") {
        return Ok(out);
    }
    let mut said = Vec::new();
    for l in out.lines().chain(err.lines()) {
        let Some(at) = l.find("policy.lua:") else {
            continue;
        };
        let rest = &l[at + "policy.lua:".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<usize>() {
            Ok(n) if n > offset => {
                said.push(format!("{}{}", block.at(n - offset), &rest[digits.len()..]))
            }
            _ => said.push(format!("{}: {}", block.at(1), l.trim())),
        }
    }
    if said.is_empty() {
        said.push(format!("{}: pocket {cmd}: {}{}", block.at(1), out, err));
    }
    Err(said.join("\n"))
}

const LISTENER: &str = "listeners = { { bind = \"127.0.0.1:1\" } }";

fn check_block(block: &Block) -> Result<(), String> {
    match kind(&block.text) {
        Kind::Policy => {
            pocket_on("check", &block.text, block, 0)?;
            if block.text.contains("tests = {") {
                pocket_on("test", &block.text, block, 0)?;
            }
            Ok(())
        }
        Kind::Pools => {
            let src = format!("return {{\n  {LISTENER},\n{}}}\n", block.text);
            pocket_on("check", &src, block, 2).map(|_| ())
        }
        Kind::Excerpt(key) => {
            // `return {` goes on the first key's line: lines keep their numbers.
            let src: Vec<String> = block
                .text
                .lines()
                .enumerate()
                .map(|(i, l)| match i == key {
                    true => format!("return {{ {LISTENER}, {l}"),
                    false => l.to_string(),
                })
                .collect();
            let src = src.join("\n") + "\n}\n";
            pocket_on("check", &src, block, 0).map(|_| ())
        }
        Kind::Fragment => {
            // Inside a function that is never called: compiled, not run.
            let tail = format!("end\nreturn {{ {LISTENER} }}\n");
            let head =
                "local _ = function(req, res, server, up, why, conn, http, servers, opts, ...)";
            let mut said = Vec::new();
            for (how, open, close) in [
                ("as table fields", " local _ = {", "}\n"),
                ("as statements", "", ""),
                ("as an expression", " return", "\n"),
            ] {
                let src = format!("{head}{open}\n{}{close}{tail}", block.text);
                match pocket_on("check", &src, block, 1) {
                    Ok(_) => return Ok(()),
                    Err(e) => said.push(format!("  {how}: {e}")),
                }
            }
            Err(format!(
                "{}: this fragment does not compile:\n{}",
                block.at(1),
                said.join("\n")
            ))
        }
    }
}

#[test]
fn every_lua_block_in_the_docs_is_checked_by_pocket() {
    let mut failures = Vec::new();
    let mut counts = [0usize; 3];
    for page in doc_pages() {
        for block in lua_blocks(&page) {
            counts[match kind(&block.text) {
                Kind::Policy | Kind::Excerpt(_) => 0,
                Kind::Pools => 1,
                Kind::Fragment => 2,
            }] += 1;
            if let Err(e) = check_block(&block) {
                failures.push(e);
            }
        }
    }
    eprintln!(
        "lua blocks: {} policies and excerpts, {} pools, {} fragments",
        counts[0], counts[1], counts[2]
    );
    assert!(
        counts[0] >= 10 && counts[2] >= 10,
        "too few lua blocks found: {counts:?}"
    );
    assert!(
        failures.is_empty(),
        "{} lua block(s) in the docs are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A block that is wrong is reported at its page's line.
#[test]
fn a_wrong_block_is_reported_at_its_page_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.md");
    std::fs::write(
        &page,
        "# t\n\n```lua\npools = {\n  app = { servers = { \"127.0.0.1:1\" }, balance = \"nope\" },\n}\n```\n\n```lua\nif req.path == \"/\" then\n  return = 1\nend\n```\n",
    )
    .unwrap();
    let blocks = lua_blocks(&page);
    assert_eq!(blocks.len(), 2);
    let pools = check_block(&blocks[0]).unwrap_err();
    assert!(pools.contains("page.md:5"), "{pools}");
    let fragment = check_block(&blocks[1]).unwrap_err();
    assert!(fragment.contains("page.md:11"), "{fragment}");
}

fn example_policies() -> Vec<PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("policy.lua"))
        .filter(|p| p.exists())
        .collect();
    out.sort();
    assert!(out.len() >= 5, "{out:?}");
    out
}

#[test]
fn every_example_passes_check_and_its_tests_and_its_readme_says_so() {
    let mut failures = Vec::new();
    for policy in example_policies() {
        let p = policy.to_str().unwrap();
        let (code, out, err) = pocket_cmd(&["check", p]);
        if code != 0 || !out.contains("ok") {
            failures.push(format!("pocket check {}: {out}{err}", shown(&policy)));
        }
        let text = std::fs::read_to_string(&policy).unwrap();
        if !text.contains("tests = {") {
            failures.push(format!("{} has no tests = {{", shown(&policy)));
        }
        let (code, out, err) = pocket_cmd(&["test", p]);
        if code != 0 || out.contains("FAIL") {
            failures.push(format!("pocket test {}: {out}{err}", shown(&policy)));
        }
        // The README's own transcript of `pocket test`.
        let summary = out
            .lines()
            .find(|l| l.contains(" passed, "))
            .unwrap_or("")
            .replace(p, &shown(&policy));
        let readme = policy.with_file_name("README.md");
        let said = std::fs::read_to_string(&readme).unwrap_or_default();
        // (A transcript of a failing run, `N passed, 1 failed`, is not this.)
        for l in said.lines().filter(|l| l.ends_with(" passed, 0 failed")) {
            if l.trim() != summary.trim() {
                failures.push(format!(
                    "{} says {:?}; pocket test prints {summary:?}",
                    shown(&readme),
                    l.trim()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The TCP-mode examples (examples/tcp/*.lua) are single files with no
/// `tests` (`pocket test` runs HTTP requests, not connections): each
/// passes `pocket check`, and tests/tcp_examples.rs runs it as shipped
/// with the real servers it is written for, so a new one is not left
/// untried.
#[test]
fn every_tcp_example_passes_check_and_is_run_with_real_servers() {
    let runs = std::fs::read_to_string(root().join("tests/tcp_examples.rs")).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(root().join("examples/tcp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lua"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let mut failures = Vec::new();
    for file in files {
        let (code, out, err) = pocket_cmd(&["check", file.to_str().unwrap()]);
        if code != 0 || !out.contains("mode tcp") || !out.ends_with("ok\n") {
            failures.push(format!("pocket check {}: {out}{err}", shown(&file)));
        }
        let name = file.file_name().unwrap().to_str().unwrap();
        if !runs.contains(&format!("\"{name}\"")) {
            failures.push(format!(
                "{} is not run by tests/tcp_examples.rs",
                shown(&file)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The pool names of a policy, from `pocket check`'s summary.
fn pools_of(policy: &Path) -> Vec<String> {
    let (code, out, err) = pocket_cmd(&["check", policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let mut in_pools = false;
    let mut names = Vec::new();
    for l in out.lines() {
        if l.starts_with("pools:") {
            in_pools = true;
        } else if !l.starts_with(' ') {
            in_pools = false;
        } else if in_pools && !l.starts_with("   ") {
            if let Some((name, _)) = l.trim().split_once(" (") {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// Where the policy names a pool as a routing decision, before its tests:
/// (byte range of the name, line).
fn pool_choices(text: &str, pools: &[String]) -> Vec<(std::ops::Range<usize>, usize)> {
    let end = text.find("\n  tests = {").unwrap_or(text.len());
    let mut out = Vec::new();
    let mut offset = 0;
    for (n, line) in text[..end].lines().enumerate() {
        let code = line.split("--").next().unwrap_or("");
        for key in [
            "pool = \"",
            "default = \"",
            "fallback = \"",
            "stable = \"",
            "canary = \"",
            "return \"",
        ] {
            let mut from = 0;
            while let Some(at) = code[from..].find(key) {
                let start = from + at + key.len();
                let Some(len) = code[start..].find('"') else {
                    break;
                };
                let name = &code[start..start + len];
                // A listener's default pool is a rule too, but only when
                // on_request can leave a request undecided.
                if pools.iter().any(|p| p == name) && !code.contains("bind = ") {
                    out.push((offset + start..offset + start + len, n + 1));
                }
                from = start + len;
            }
        }
        offset += line.len() + 1;
    }
    out
}

/// `pocket test` proves only the rules a case goes through: swap each pool
/// a rule chooses for another pool of the policy, and a case must fail.
#[test]
fn every_rule_of_every_example_is_covered_by_a_test() {
    let mut survivors = Vec::new();
    let mut mutants = 0;
    for policy in example_policies() {
        let text = std::fs::read_to_string(&policy).unwrap();
        let pools = pools_of(&policy);
        if pools.len() < 2 {
            continue;
        }
        for (range, line) in pool_choices(&text, &pools) {
            let name = &text[range.clone()];
            let other = pools.iter().find(|p| *p != name).unwrap();
            let mutant = format!("{}{other}{}", &text[..range.start], &text[range.end..]);
            let dir = tempfile::tempdir().unwrap();
            let path = write_policy(dir.path(), "policy.lua", &mutant);
            let (code, out, _) = pocket_cmd(&["test", path.to_str().unwrap()]);
            mutants += 1;
            if code == 0 && !out.contains("FAIL") {
                survivors.push(format!(
                    "{}:{line}: with pool \"{name}\" changed to \"{other}\" every case still passes; add a case for this rule",
                    shown(&policy)
                ));
            }
        }
    }
    eprintln!("{mutants} rules swapped");
    assert!(mutants >= 10, "only {mutants} rules found");
    assert!(survivors.is_empty(), "{}", survivors.join("\n"));
}

/// GitHub's anchors for a page's headings: lowercase, letters, digits,
/// `-` and `_` kept, spaces as `-`, a repeated heading numbered.
fn anchors(page: &Path) -> std::collections::HashSet<String> {
    let text = std::fs::read_to_string(page).unwrap_or_default();
    let mut out = std::collections::HashSet::new();
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        if fenced || !title.trim_start_matches('#').starts_with(' ') {
            continue;
        }
        let anchor: String = title
            .trim_start_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(anchor.clone()).or_insert(0);
        out.insert(match *n {
            0 => anchor.clone(),
            k => format!("{anchor}-{k}"),
        });
        *n += 1;
    }
    out
}

/// Every relative link of the docs names a file that exists, and a heading
/// of that page when it has `#anchor`.
#[test]
fn every_link_in_the_docs_leads_somewhere() {
    let mut broken = Vec::new();
    for page in doc_pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let link = &rest[..end];
            if link.contains("://") || link.starts_with("mailto:") || link.contains(' ') {
                continue;
            }
            let line = text[..at].matches('\n').count() + 1;
            let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = match file {
                "" => page.clone(),
                f => page.parent().unwrap().join(f),
            };
            if !target.exists() {
                broken.push(format!("{}:{line}: {link}: no such file", shown(&page)));
            } else if !anchor.is_empty()
                && target.extension().is_some_and(|x| x == "md")
                && !anchors(&target).contains(anchor)
            {
                broken.push(format!("{}:{line}: {link}: no such heading", shown(&page)));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
