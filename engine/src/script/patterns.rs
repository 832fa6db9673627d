//! Lua 5.4's pattern functions (`string.find`, `string.match`,
//! `string.gmatch`, `string.gsub`) with a step budget.
//!
//! Lua's own matcher backtracks without limit: `("a"):rep(400):find(".-.-.-b")`
//! runs for seconds inside one C call, where the instruction hook never
//! fires, and a single `-` makes a search quadratic in the subject. This is
//! a port of the matcher of Lua 5.4's `lstrlib.c` (same results, same
//! errors, same argument handling) that counts its steps and looks at the
//! VM's deadline every [`STEPS_PER_CHECK`] of them; past the deadline it
//! raises the budget error the instruction hook raises.
//!
//! The matcher itself is safe Rust over byte slices. The functions Lua
//! calls are raw C functions (not mlua callbacks) so that they cost what
//! the C ones cost on the request path and raise errors exactly as Lua
//! does (string messages with `chunk:line:`, `bad argument #2 to 'find'`).
//! Lua errors are `longjmp`s; the frames they can cross (argument checks,
//! pushing results, calling a `gsub` replacement function) hold nothing
//! with a destructor.

use std::ffi::{c_char, c_int, CStr};
use std::fmt;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use mlua::ffi::{self, lua_State};
use mlua::Lua;

use super::guarded::{self, LARGE};
use super::vm::Budget;

/// Most captures a pattern may have (`LUA_MAXCAPTURES`).
const MAX_CAPTURES: usize = 32;
/// Deepest recursion of the matcher (`MAXCCALLS` in lstrlib.c).
const MAX_DEPTH: u32 = 200;
/// How many steps (a call of the matcher, a character tried by a
/// repetition, a few bytes compared) between two looks at the clock. A
/// step is a few nanoseconds, so this looks every ~10-50 µs.
pub(crate) const STEPS_PER_CHECK: u32 = 4096;

const ESC: u8 = b'%';
const CAP_UNFINISHED: isize = -1;
const CAP_POSITION: isize = -2;

/// Why a match or a substitution stopped with an error. Everything here is
/// `Copy`: it must cross no destructor on its way to `lua_error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    EndsWithEscape,
    MissingBracket,
    MissingBalanceArguments,
    MissingFrontierBracket,
    InvalidCaptureIndex(i64),
    InvalidPatternCapture,
    UnfinishedCapture,
    TooManyCaptures,
    TooComplex,
    /// `gsub`'s function or table gave something that is not a string.
    InvalidReplacement(&'static CStr),
    InvalidEscapeInReplacement,
    /// The running call is past its deadline.
    OutOfTime,
    /// A bug in the matcher (a panic); reported rather than unwinding
    /// through Lua's C frames.
    Internal,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::EndsWithEscape => f.write_str("malformed pattern (ends with '%')"),
            Failure::MissingBracket => f.write_str("malformed pattern (missing ']')"),
            Failure::MissingBalanceArguments => {
                f.write_str("malformed pattern (missing arguments to '%b')")
            }
            Failure::MissingFrontierBracket => f.write_str("missing '[' after '%f' in pattern"),
            Failure::InvalidCaptureIndex(n) => write!(f, "invalid capture index %{n}"),
            Failure::InvalidPatternCapture => f.write_str("invalid pattern capture"),
            Failure::UnfinishedCapture => f.write_str("unfinished capture"),
            Failure::TooManyCaptures => f.write_str("too many captures"),
            Failure::TooComplex => f.write_str("pattern too complex"),
            Failure::InvalidReplacement(type_name) => write!(
                f,
                "invalid replacement value (a {})",
                type_name.to_string_lossy()
            ),
            Failure::InvalidEscapeInReplacement => {
                f.write_str("invalid use of '%' in replacement string")
            }
            Failure::OutOfTime => f.write_str(OUT_OF_TIME),
            Failure::Internal => f.write_str("internal error in pattern matching"),
        }
    }
}

/// The budget error's text; the instruction hook in vm.rs says the same.
const OUT_OF_TIME: &str = super::vm::BUDGET_MESSAGE;

/// One capture: where it starts in the subject and its length, or
/// `CAP_UNFINISHED` / `CAP_POSITION`.
#[derive(Clone, Copy)]
struct Capture {
    init: usize,
    len: isize,
}

/// A capture's value, as `get_onecapture` finds it.
enum CaptureValue {
    /// Bytes `start..end` of the subject.
    Text(usize, usize),
    /// A position capture `()`: the 1-based index.
    Position(usize),
}

/// Where a matcher finds its budget: most calls end long before their
/// first look at the clock, so the upvalue is read only then.
#[derive(Clone, Copy)]
enum BudgetRef<'a> {
    Ready(&'a Budget),
    /// Upvalue `index` of the running C function of `state` (see
    /// [`budget_at`]).
    Upvalue(*mut lua_State, c_int),
}

impl BudgetRef<'_> {
    fn get(&self) -> &Budget {
        match *self {
            BudgetRef::Ready(budget) => budget,
            // SAFETY: made by the C function running on `state`, whose
            // upvalue `index` is the budget userdata (install).
            BudgetRef::Upvalue(state, index) => unsafe { budget_at(state, index) },
        }
    }
}

/// The state of one match (`MatchState` in lstrlib.c). Positions are
/// indexes into `src` and `pat`; reading past the end of either gives 0,
/// as C reads the terminating NUL.
struct Matcher<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    depth: u32,
    level: usize,
    /// Entries below `level` are set; the others are not read.
    capture: [MaybeUninit<Capture>; MAX_CAPTURES],
    fuel: u32,
    budget: BudgetRef<'a>,
}

impl<'a> Matcher<'a> {
    fn new(src: &'a [u8], pat: &'a [u8], budget: BudgetRef<'a>) -> Self {
        Matcher {
            src,
            pat,
            depth: MAX_DEPTH,
            level: 0,
            // not zeroed: 512 bytes a call for captures most patterns lack
            capture: [MaybeUninit::uninit(); MAX_CAPTURES],
            fuel: STEPS_PER_CHECK,
            budget,
        }
    }

    /// Capture `i`, which must be below `level`.
    #[inline(always)]
    fn cap(&self, i: usize) -> Capture {
        assert!(i < self.level);
        // SAFETY: start_capture sets entry `level` before raising `level`,
        // so every entry below `level` is initialised.
        unsafe { self.capture[i].assume_init() }
    }

    #[inline(always)]
    fn set_len(&mut self, i: usize, len: isize) {
        let init = self.cap(i).init;
        self.capture[i].write(Capture { init, len });
    }

    /// Ready for a match at a new position (`reprepstate`).
    fn reset(&mut self) {
        self.depth = MAX_DEPTH;
        self.level = 0;
    }

    #[inline(always)]
    fn pat_at(&self, p: usize) -> u8 {
        self.pat.get(p).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn src_at(&self, s: usize) -> u8 {
        self.src.get(s).copied().unwrap_or(0)
    }

    /// Spends `n` steps; every [`STEPS_PER_CHECK`] looks at the clock.
    #[inline(always)]
    fn spend(&mut self, n: u32) -> Result<(), Failure> {
        match self.fuel.checked_sub(n) {
            Some(left) => {
                self.fuel = left;
                Ok(())
            }
            None => self.refuel(),
        }
    }

    #[cold]
    fn refuel(&mut self) -> Result<(), Failure> {
        self.fuel = STEPS_PER_CHECK;
        if self.budget.get().over() {
            Err(Failure::OutOfTime)
        } else {
            Ok(())
        }
    }

    /// The first match starting at `from` or after (only at `from` when
    /// `anchor`), skipping one that ends at `last_match` (an empty match
    /// right after the previous one, for gmatch and gsub): `(start, end)`.
    /// A panic of the matcher is caught here, as it must not unwind through
    /// Lua's C code.
    fn search(
        &mut self,
        from: usize,
        anchor: bool,
        last_match: usize,
    ) -> Result<Option<(usize, usize)>, Failure> {
        catch_unwind(AssertUnwindSafe(|| {
            let mut s = from;
            while s <= self.src.len() {
                self.reset();
                if let Some(e) = self.do_match(s, 0)? {
                    if e != last_match {
                        return Ok(Some((s, e)));
                    }
                }
                if anchor {
                    break;
                }
                s += 1;
            }
            Ok(None)
        }))
        .unwrap_or(Err(Failure::Internal))
    }

    /// The end of the class starting at `p` (`classend`).
    fn class_end(&self, mut p: usize) -> Result<usize, Failure> {
        let c = self.pat_at(p);
        p += 1;
        match c {
            ESC => {
                if p >= self.pat.len() {
                    return Err(Failure::EndsWithEscape);
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.pat_at(p) == b'^' {
                    p += 1;
                }
                // look for a ']'
                loop {
                    if p >= self.pat.len() {
                        return Err(Failure::MissingBracket);
                    }
                    let c = self.pat[p];
                    p += 1;
                    if c == ESC && p < self.pat.len() {
                        p += 1; // skip escapes (e.g. '%]')
                    }
                    if self.pat_at(p) == b']' {
                        return Ok(p + 1);
                    }
                }
            }
            _ => Ok(p),
        }
    }

    /// Does byte `c` match the class `[...]` from `p` (the '[') to `ec`
    /// (its ']')? (`matchbracketclass`)
    fn bracket_class(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.pat_at(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                return !sig;
            }
            let pc = self.pat[p];
            if pc == ESC {
                p += 1;
                if class_matches(c, self.pat_at(p)) {
                    return sig;
                }
            } else if self.pat_at(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if pc <= c && c <= self.pat[p] {
                    return sig;
                }
            } else if pc == c {
                return sig;
            }
        }
    }

    /// Does the subject byte at `s` match the single class `p..ep`?
    #[inline(always)]
    fn single_match(&self, s: usize, p: usize, ep: usize) -> bool {
        let Some(&c) = self.src.get(s) else {
            return false;
        };
        match self.pat[p] {
            b'.' => true,
            ESC => class_matches(c, self.pat_at(p + 1)),
            b'[' => self.bracket_class(c, p, ep - 1),
            pc => pc == c,
        }
    }

    /// Steps one `single_match` costs: a bracket class is scanned byte by
    /// byte, so a long one costs more.
    #[inline(always)]
    fn class_cost(&self, p: usize, ep: usize) -> u32 {
        if self.pat[p] == b'[' {
            1 + ((ep - p) / 16).min(STEPS_PER_CHECK as usize) as u32
        } else {
            1
        }
    }

    fn do_match(&mut self, s: usize, p: usize) -> Result<Option<usize>, Failure> {
        if self.depth == 0 {
            return Err(Failure::TooComplex);
        }
        self.depth -= 1;
        let result = self.match_here(s, p);
        self.depth += 1;
        result
    }

    /// The body of lstrlib.c's `match`; its `goto init` (tail calls) is
    /// the loop.
    fn match_here(&mut self, mut s: usize, mut p: usize) -> Result<Option<usize>, Failure> {
        loop {
            self.spend(1)?;
            if p >= self.pat.len() {
                return Ok(Some(s)); // end of pattern
            }
            match self.pat[p] {
                b'(' => {
                    return if self.pat_at(p + 1) == b')' {
                        self.start_capture(s, p + 2, CAP_POSITION)
                    } else {
                        self.start_capture(s, p + 1, CAP_UNFINISHED)
                    };
                }
                b')' => return self.end_capture(s, p + 1),
                b'$' if p + 1 == self.pat.len() => {
                    return Ok((s == self.src.len()).then_some(s));
                }
                ESC if self.pat_at(p + 1) == b'b' => match self.match_balance(s, p + 2)? {
                    Some(e) => {
                        s = e;
                        p += 4;
                        continue;
                    }
                    None => return Ok(None),
                },
                ESC if self.pat_at(p + 1) == b'f' => {
                    p += 2;
                    if self.pat_at(p) != b'[' {
                        return Err(Failure::MissingFrontierBracket);
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.src_at(s - 1) };
                    let current = self.src_at(s);
                    if !self.bracket_class(previous, p, ep - 1)
                        && self.bracket_class(current, p, ep - 1)
                    {
                        p = ep;
                        continue;
                    }
                    return Ok(None);
                }
                ESC if self.pat_at(p + 1).is_ascii_digit() => {
                    match self.match_capture(s, self.pat_at(p + 1))? {
                        Some(e) => {
                            s = e;
                            p += 2;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
                _ => {
                    // a single class plus an optional suffix
                    let ep = self.class_end(p)?;
                    let suffix = self.pat_at(ep);
                    if !self.single_match(s, p, ep) {
                        if matches!(suffix, b'*' | b'?' | b'-') {
                            p = ep + 1; // accepts empty
                            continue;
                        }
                        return Ok(None);
                    }
                    match suffix {
                        b'?' => {
                            if let Some(e) = self.do_match(s + 1, ep + 1)? {
                                return Ok(Some(e));
                            }
                            p = ep + 1;
                        }
                        b'+' => return self.max_expand(s + 1, p, ep),
                        b'*' => return self.max_expand(s, p, ep),
                        b'-' => return self.min_expand(s, p, ep),
                        _ => {
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        }
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>, Failure> {
        let cost = self.class_cost(p, ep);
        let mut i = 0;
        while self.single_match(s + i, p, ep) {
            self.spend(cost)?;
            i += 1;
        }
        // try with the most repetitions first
        loop {
            if let Some(e) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(e));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Result<Option<usize>, Failure> {
        let cost = self.class_cost(p, ep);
        loop {
            if let Some(e) = self.do_match(s, ep + 1)? {
                return Ok(Some(e));
            }
            self.spend(cost)?;
            if !self.single_match(s, p, ep) {
                return Ok(None);
            }
            s += 1; // one more repetition
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: isize) -> Result<Option<usize>, Failure> {
        if self.level >= MAX_CAPTURES {
            return Err(Failure::TooManyCaptures);
        }
        self.capture[self.level].write(Capture { init: s, len: what });
        self.level += 1;
        let result = self.do_match(s, p)?;
        if result.is_none() {
            self.level -= 1; // undo capture
        }
        Ok(result)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Result<Option<usize>, Failure> {
        let l = self.capture_to_close()?;
        let init = self.cap(l).init;
        self.set_len(l, (s - init) as isize);
        let result = self.do_match(s, p)?;
        if result.is_none() {
            self.set_len(l, CAP_UNFINISHED); // undo capture
        }
        Ok(result)
    }

    fn capture_to_close(&self) -> Result<usize, Failure> {
        (0..self.level)
            .rev()
            .find(|&l| self.cap(l).len == CAP_UNFINISHED)
            .ok_or(Failure::InvalidPatternCapture)
    }

    /// Back reference `%1`..`%9` (`match_capture` with `check_capture`).
    fn match_capture(&mut self, s: usize, digit: u8) -> Result<Option<usize>, Failure> {
        let l = i64::from(digit) - i64::from(b'1');
        if l < 0 || l as usize >= self.level || self.cap(l as usize).len == CAP_UNFINISHED {
            return Err(Failure::InvalidCaptureIndex(l + 1));
        }
        let cap = self.cap(l as usize);
        // a position capture has a negative length: never matches
        let Ok(len) = usize::try_from(cap.len) else {
            return Ok(None);
        };
        self.spend(1 + (len / 16).min(STEPS_PER_CHECK as usize) as u32)?;
        if self.src.len() - s >= len && self.src[cap.init..cap.init + len] == self.src[s..s + len] {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }

    /// `%bxy` (`matchbalance`): `p` is at `x`.
    fn match_balance(&mut self, s: usize, p: usize) -> Result<Option<usize>, Failure> {
        if p + 1 >= self.pat.len() {
            return Err(Failure::MissingBalanceArguments);
        }
        if self.src_at(s) != self.pat[p] {
            return Ok(None);
        }
        let (open, close) = (self.pat[p], self.pat[p + 1]);
        let mut depth = 1;
        let mut i = s + 1;
        let result = loop {
            let Some(&c) = self.src.get(i) else {
                break None; // ends out of balance
            };
            if c == close {
                depth -= 1;
                if depth == 0 {
                    break Some(i + 1);
                }
            } else if c == open {
                depth += 1;
            }
            i += 1;
        };
        // one scan is linear in the subject; many of them are counted
        self.spend(1 + ((i - s) / 16).min(STEPS_PER_CHECK as usize) as u32)?;
        Ok(result)
    }

    /// The value of capture `i` (`get_onecapture`); with no captures,
    /// capture 0 is the whole match `whole`.
    fn capture_value(&self, i: usize, whole: (usize, usize)) -> Result<CaptureValue, Failure> {
        if i >= self.level {
            if i != 0 {
                return Err(Failure::InvalidCaptureIndex(i as i64 + 1));
            }
            return Ok(CaptureValue::Text(whole.0, whole.1));
        }
        let cap = self.cap(i);
        match cap.len {
            CAP_UNFINISHED => Err(Failure::UnfinishedCapture),
            CAP_POSITION => Ok(CaptureValue::Position(cap.init + 1)),
            len => Ok(CaptureValue::Text(cap.init, cap.init + len as usize)),
        }
    }
}

/// Does byte `c` belong to the class `%cl` (`match_class`)? The C locale's
/// classes, as Lua sees them.
#[inline]
fn class_matches(c: u8, cl: u8) -> bool {
    let bit = match cl.to_ascii_lowercase() {
        b'a' => ALPHA,
        b'c' => CNTRL,
        b'd' => DIGIT,
        b'g' => GRAPH,
        b'l' => LOWER,
        b'p' => PUNCT,
        b's' => SPACE,
        b'u' => UPPER,
        b'w' => ALPHA | DIGIT,
        b'x' => XDIGIT,
        b'z' => return (c == 0) == cl.is_ascii_lowercase(),
        _ => return cl == c,
    };
    ((CLASSES[usize::from(c)] & bit) != 0) == cl.is_ascii_lowercase()
}

const ALPHA: u16 = 1;
const CNTRL: u16 = 2;
const DIGIT: u16 = 4;
const GRAPH: u16 = 8;
const LOWER: u16 = 16;
const PUNCT: u16 = 32;
const SPACE: u16 = 64;
const UPPER: u16 = 128;
const XDIGIT: u16 = 256;

/// The class bits of each byte in the C locale (ctype.h). C's `isspace`
/// includes '\v', which Rust's `is_ascii_whitespace` does not.
static CLASSES: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut bits = 0;
        if c.is_ascii_alphabetic() {
            bits |= ALPHA;
        }
        if c.is_ascii_control() {
            bits |= CNTRL;
        }
        if c.is_ascii_digit() {
            bits |= DIGIT;
        }
        if c.is_ascii_graphic() {
            bits |= GRAPH;
        }
        if c.is_ascii_lowercase() {
            bits |= LOWER;
        }
        if c.is_ascii_punctuation() {
            bits |= PUNCT;
        }
        if c == b' ' || (c >= b'\t' && c <= b'\r') {
            bits |= SPACE;
        }
        if c.is_ascii_uppercase() {
            bits |= UPPER;
        }
        if c.is_ascii_hexdigit() {
            bits |= XDIGIT;
        }
        table[i] = bits;
        i += 1;
    }
    table
};

/// True when `p` has none of `^$*+?.([%-`: `find` then searches plainly.
fn no_specials(p: &[u8]) -> bool {
    !p.iter().any(|c| {
        matches!(
            c,
            b'^' | b'$' | b'*' | b'+' | b'?' | b'.' | b'(' | b'[' | b'%' | b'-'
        )
    })
}

/// Where `needle` first occurs in `hay`; linear time whatever the input
/// (C Lua's `lmemfind` is not: `memchr` then `memcmp` at each candidate).
fn find_plain(hay: &[u8], needle: &[u8]) -> Option<usize> {
    match needle.len() {
        0 => Some(0),
        1 => memchr::memchr(needle[0], hay),
        n if n > hay.len() => None,
        // short subjects (headers, paths): building a searcher costs more
        // than comparing; at most 256 * 16 byte comparisons
        n if n <= 16 && hay.len() <= 256 => (0..=hay.len() - n).find(|&i| {
            hay[i] == needle[0]
                && hay[i + 1..i + n]
                    .iter()
                    .zip(&needle[1..])
                    .all(|(a, b)| a == b)
        }),
        _ => memchr::memmem::find(hay, needle),
    }
}

/// Lua 5.4's `posrelatI`: a 1-based, possibly negative, start position
/// clipped to `1..`; the result may be past the end.
fn start_position(pos: ffi::lua_Integer, len: usize) -> usize {
    if pos > 0 {
        pos as usize
    } else if pos == 0 || pos.unsigned_abs() > len as u64 {
        1
    } else {
        len - pos.unsigned_abs() as usize + 1
    }
}

// ---------------------------------------------------------------------
// The Lua side: raw C functions over the Lua stack.
// ---------------------------------------------------------------------

/// The budget a function's upvalue `index` holds (a userdata holding an
/// `Rc<Budget>` pointer, made by [`install`]).
pub(super) unsafe fn budget_at<'a>(state: *mut lua_State, index: c_int) -> &'a Budget {
    let cell = ffi::lua_touserdata(state, ffi::lua_upvalueindex(index)) as *const *const Budget;
    &**cell
}

/// Argument `arg` as bytes (numbers are converted, as Lua does); raises
/// `bad argument` otherwise. Valid while the argument is on the stack.
unsafe fn check_bytes<'a>(state: *mut lua_State, arg: c_int) -> &'a [u8] {
    let mut len = 0;
    let ptr = ffi::luaL_checklstring(state, arg, &mut len);
    std::slice::from_raw_parts(ptr as *const u8, len)
}

/// Upvalue or stack string at `index` as bytes.
unsafe fn bytes_at<'a>(state: *mut lua_State, index: c_int) -> &'a [u8] {
    let mut len = 0;
    let ptr = ffi::lua_tolstring(state, index, &mut len);
    if ptr.is_null() {
        return &[];
    }
    std::slice::from_raw_parts(ptr as *const u8, len)
}

unsafe fn push_bytes(state: *mut lua_State, bytes: &[u8]) {
    ffi::lua_pushlstring(state, bytes.as_ptr() as *const c_char, bytes.len());
}

unsafe fn push_capture(
    state: *mut lua_State,
    m: &Matcher,
    i: usize,
    whole: (usize, usize),
) -> Result<(), Failure> {
    match m.capture_value(i, whole)? {
        CaptureValue::Text(start, end) => push_bytes(state, &m.src[start..end]),
        CaptureValue::Position(n) => ffi::lua_pushinteger(state, n as ffi::lua_Integer),
    }
    Ok(())
}

/// Pushes the captures (`push_captures`); with none, the whole match when
/// `whole` is given (match, gmatch, gsub) and nothing when not (find).
unsafe fn push_captures(
    state: *mut lua_State,
    m: &Matcher,
    whole: Option<(usize, usize)>,
) -> Result<c_int, Failure> {
    let n = if m.level == 0 && whole.is_some() {
        1
    } else {
        m.level
    };
    ffi::luaL_checkstack(state, n as c_int, c"too many captures".as_ptr());
    for i in 0..n {
        push_capture(state, m, i, whole.unwrap_or((0, 0)))?;
    }
    Ok(n as c_int)
}

/// Raises `failure` as Lua would: a string error with `chunk:line:` in
/// front. The budget error names the innermost Lua line even when a C
/// function (`pcall`) called us, as the instruction hook does.
pub(super) unsafe fn raise(state: *mut lua_State, failure: Failure) -> ! {
    if failure == Failure::OutOfTime {
        push_lua_place(state);
    } else {
        ffi::luaL_where(state, 1);
    }
    // formatted on the stack: no destructor may be pending at lua_error
    let mut buf = [0u8; 128];
    let len = {
        let mut out = &mut buf[..];
        let _ = write!(out, "{failure}");
        128 - out.len()
    };
    push_bytes(state, &buf[..len]);
    ffi::lua_concat(state, 2);
    ffi::lua_error(state)
}

/// Pushes `short_src:line: ` of the innermost running Lua function, or "".
unsafe fn push_lua_place(state: *mut lua_State) {
    let mut ar = MaybeUninit::<ffi::lua_Debug>::zeroed();
    let mut level = 1;
    while ffi::lua_getstack(state, level, ar.as_mut_ptr()) != 0 {
        if ffi::lua_getinfo(state, c"Sl".as_ptr(), ar.as_mut_ptr()) != 0 {
            let ar = ar.assume_init_ref();
            if ar.currentline > 0 {
                ffi::lua_pushfstring(
                    state,
                    c"%s:%d: ".as_ptr(),
                    ar.short_src.as_ptr(),
                    ar.currentline,
                );
                return;
            }
        }
        level += 1;
    }
    ffi::lua_pushstring(state, c"".as_ptr());
}

#[inline]
unsafe fn finish(state: *mut lua_State, result: Result<c_int, Failure>) -> c_int {
    match result {
        Ok(n) => n,
        Err(failure) => raise(state, failure),
    }
}

unsafe extern "C-unwind" fn str_find(state: *mut lua_State) -> c_int {
    finish(state, find_aux(state, true))
}

unsafe extern "C-unwind" fn str_match(state: *mut lua_State) -> c_int {
    finish(state, find_aux(state, false))
}

/// `string.find` and `string.match` (`str_find_aux`).
unsafe fn find_aux(state: *mut lua_State, find: bool) -> Result<c_int, Failure> {
    let s = check_bytes(state, 1);
    let p = check_bytes(state, 2);
    let init = start_position(ffi::luaL_optinteger(state, 3, 1), s.len()) - 1;
    if init > s.len() {
        ffi::lua_pushnil(state); // cannot find anything
        return Ok(1);
    }
    if find && (ffi::lua_toboolean(state, 4) != 0 || no_specials(p)) {
        // linear, but a loop of such searches must see the clock
        if s.len() >= LARGE && budget_at(state, 1).over() {
            return Err(Failure::OutOfTime);
        }
        if let Some(at) = find_plain(&s[init..], p) {
            let start = init + at;
            ffi::lua_pushinteger(state, (start + 1) as ffi::lua_Integer);
            ffi::lua_pushinteger(state, (start + p.len()) as ffi::lua_Integer);
            return Ok(2);
        }
    } else {
        let anchor = p.first() == Some(&b'^');
        let pat = if anchor { &p[1..] } else { p };
        if anchor && no_specials(pat) {
            // `^/static/`: a prefix, compared in place (what the matcher
            // would find, without building it).
            if !s[init..].starts_with(pat) {
                ffi::lua_pushnil(state);
                return Ok(1);
            }
            let end = init + pat.len();
            if find {
                ffi::lua_pushinteger(state, (init + 1) as ffi::lua_Integer);
                ffi::lua_pushinteger(state, end as ffi::lua_Integer);
                return Ok(2);
            }
            let whole = &s[init..end];
            ffi::lua_pushlstring(state, whole.as_ptr() as *const c_char, whole.len());
            return Ok(1);
        }
        let mut m = Matcher::new(s, pat, BudgetRef::Upvalue(state, 1));
        if let Some((start, end)) = m.search(init, anchor, usize::MAX)? {
            if find {
                ffi::lua_pushinteger(state, (start + 1) as ffi::lua_Integer);
                ffi::lua_pushinteger(state, end as ffi::lua_Integer);
                return Ok(push_captures(state, &m, None)? + 2);
            }
            return push_captures(state, &m, Some((start, end)));
        }
    }
    ffi::lua_pushnil(state); // not found
    Ok(1)
}

/// What a `gmatch` iterator keeps between calls (`GMatchState`), in a
/// userdata upvalue. The pointers stay valid as long as the iterator:
/// its other upvalues hold the strings (Lua does not move them) and the
/// budget.
#[derive(Clone, Copy)]
struct GmatchState {
    /// Where the next search starts.
    src: usize,
    /// End of the last match (`usize::MAX`: none yet): an empty match
    /// there is skipped.
    last_match: usize,
    subject: (*const u8, usize),
    pattern: (*const u8, usize),
    budget: *const Budget,
}

/// `string.gmatch(s, pattern [, init])`: upvalues of the iterator are the
/// subject, the pattern, the state and the budget.
unsafe extern "C-unwind" fn str_gmatch(state: *mut lua_State) -> c_int {
    let s = check_bytes(state, 1);
    let p = check_bytes(state, 2);
    let mut init = start_position(ffi::luaL_optinteger(state, 3, 1), s.len()) - 1;
    if init > s.len() {
        init = s.len() + 1; // start after the end: finds nothing
    }
    ffi::lua_settop(state, 2); // keep the strings alive in the closure
    let ud = ffi::lua_newuserdatauv(state, std::mem::size_of::<GmatchState>(), 0);
    (ud as *mut GmatchState).write(GmatchState {
        src: init,
        last_match: usize::MAX,
        subject: (s.as_ptr(), s.len()),
        pattern: (p.as_ptr(), p.len()),
        budget: budget_at(state, 1),
    });
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1)); // the budget
    ffi::lua_pushcclosure(state, gmatch_next, 4);
    1
}

unsafe extern "C-unwind" fn gmatch_next(state: *mut lua_State) -> c_int {
    finish(state, gmatch_aux(state))
}

unsafe fn gmatch_aux(state: *mut lua_State) -> Result<c_int, Failure> {
    let gm = ffi::lua_touserdata(state, ffi::lua_upvalueindex(3)) as *mut GmatchState;
    let (s, p) = ((*gm).subject, (*gm).pattern);
    let s = std::slice::from_raw_parts(s.0, s.1);
    let p = std::slice::from_raw_parts(p.0, p.1);
    let mut m = Matcher::new(s, p, BudgetRef::Ready(&*(*gm).budget));
    // a gmatch pattern has no anchor: '^' matches itself
    match m.search((*gm).src, false, (*gm).last_match)? {
        Some((start, end)) => {
            (*gm).src = end;
            (*gm).last_match = end;
            push_captures(state, &m, Some((start, end)))
        }
        None => Ok(0), // not found
    }
}

unsafe extern "C-unwind" fn str_gsub(state: *mut lua_State) -> c_int {
    finish(state, gsub_aux(state))
}

unsafe extern "C-unwind" {
    // In lauxlib.c (5.4) but not declared by mlua-sys.
    fn luaL_typeerror(state: *mut lua_State, arg: c_int, tname: *const c_char) -> c_int;
}

/// `string.gsub(s, pattern, repl [, n])` (`str_gsub`).
unsafe fn gsub_aux(state: *mut lua_State) -> Result<c_int, Failure> {
    let src = check_bytes(state, 1);
    let p = check_bytes(state, 2);
    let tr = ffi::lua_type(state, 3);
    let max_s = ffi::luaL_optinteger(state, 4, src.len() as ffi::lua_Integer + 1);
    if !matches!(
        tr,
        ffi::LUA_TNUMBER | ffi::LUA_TSTRING | ffi::LUA_TFUNCTION | ffi::LUA_TTABLE
    ) {
        luaL_typeerror(state, 3, c"string/function/table".as_ptr());
    }
    let mut buffer = MaybeUninit::<ffi::luaL_Buffer>::uninit();
    let b = buffer.as_mut_ptr(); // the buffer must not move from here on
    ffi::luaL_buffinit(state, b);
    let anchor = p.first() == Some(&b'^');
    let pat = if anchor { &p[1..] } else { p };
    let mut m = Matcher::new(src, pat, BudgetRef::Upvalue(state, 1));
    let mut at = 0;
    let mut last_match = usize::MAX;
    let mut n: ffi::lua_Integer = 0;
    let mut changed = false;
    // Lua's loop adds the subject a byte at a time between matches; this
    // one adds the stretch up to the next match at once (same result).
    while n < max_s {
        let Some((start, e)) = m.search(at, anchor, last_match)? else {
            break; // no more matches: the rest is added below
        };
        let kept = &src[at..start];
        ffi::luaL_addlstring(b, kept.as_ptr() as *const c_char, kept.len());
        n += 1;
        changed |= add_value(state, &m, b, (start, e), tr)?;
        at = e;
        last_match = e;
        if anchor {
            break;
        }
    }
    if changed {
        let rest = &src[at..];
        ffi::luaL_addlstring(b, rest.as_ptr() as *const c_char, rest.len());
        ffi::luaL_pushresult(b);
    } else {
        ffi::lua_pushvalue(state, 1); // the subject, unchanged
    }
    ffi::lua_pushinteger(state, n);
    Ok(2)
}

/// Adds the replacement of match `whole` to `b` (`add_value`); true if it
/// changed the subject (a function or table giving nil or false keeps the
/// match as it was).
unsafe fn add_value(
    state: *mut lua_State,
    m: &Matcher,
    b: *mut ffi::luaL_Buffer,
    whole: (usize, usize),
    tr: c_int,
) -> Result<bool, Failure> {
    match tr {
        ffi::LUA_TFUNCTION => {
            ffi::lua_pushvalue(state, 3);
            let n = push_captures(state, m, Some(whole))?;
            ffi::lua_call(state, n, 1);
        }
        ffi::LUA_TTABLE => {
            push_capture(state, m, 0, whole)?;
            ffi::lua_gettable(state, 3);
        }
        _ => {
            add_string(state, m, b, whole)?;
            return Ok(true);
        }
    }
    if ffi::lua_toboolean(state, -1) == 0 {
        ffi::lua_pop(state, 1);
        let kept = &m.src[whole.0..whole.1];
        ffi::luaL_addlstring(b, kept.as_ptr() as *const c_char, kept.len());
        Ok(false)
    } else if ffi::lua_isstring(state, -1) == 0 {
        let type_name = CStr::from_ptr(ffi::luaL_typename(state, -1));
        Err(Failure::InvalidReplacement(type_name))
    } else {
        ffi::luaL_addvalue(b);
        Ok(true)
    }
}

/// Adds the replacement string (argument 3) with `%0`-`%9` and `%%`
/// expanded (`add_s`).
unsafe fn add_string(
    state: *mut lua_State,
    m: &Matcher,
    b: *mut ffi::luaL_Buffer,
    whole: (usize, usize),
) -> Result<(), Failure> {
    let mut news = bytes_at(state, 3);
    while let Some(i) = news.iter().position(|&c| c == ESC) {
        ffi::luaL_addlstring(b, news.as_ptr() as *const c_char, i);
        let Some(&c) = news.get(i + 1) else {
            return Err(Failure::InvalidEscapeInReplacement);
        };
        match c {
            ESC => ffi::luaL_addchar(b, ESC as c_char),
            b'0' => {
                let all = &m.src[whole.0..whole.1];
                ffi::luaL_addlstring(b, all.as_ptr() as *const c_char, all.len());
            }
            b'1'..=b'9' => match m.capture_value(usize::from(c - b'1'), whole)? {
                CaptureValue::Text(start, end) => {
                    let cap = &m.src[start..end];
                    ffi::luaL_addlstring(b, cap.as_ptr() as *const c_char, cap.len());
                }
                CaptureValue::Position(n) => {
                    ffi::lua_pushinteger(state, n as ffi::lua_Integer);
                    ffi::luaL_addvalue(b);
                }
            },
            _ => return Err(Failure::InvalidEscapeInReplacement),
        }
        news = &news[i + 2..];
    }
    ffi::luaL_addlstring(b, news.as_ptr() as *const c_char, news.len());
    Ok(())
}

/// Frees the `Rc<Budget>` the functions' upvalue holds.
unsafe extern "C-unwind" fn drop_budget(state: *mut lua_State) -> c_int {
    let cell = ffi::lua_touserdata(state, 1) as *mut *const Budget;
    if !cell.is_null() && !(*cell).is_null() {
        drop(Rc::from_raw(*cell));
        *cell = std::ptr::null();
    }
    0
}

/// Replaces `find`, `match`, `gmatch` and `gsub` in the `string` table
/// (which is also strings' `__index`, so `s:find()` gets them too) with the
/// budgeted ones, which look at `budget` every [`STEPS_PER_CHECK`] steps,
/// `rep` with the one from rep.rs, and guards the string and utf8
/// functions of guarded.rs.
pub(crate) fn install(lua: &Lua, budget: Rc<Budget>) -> mlua::Result<()> {
    let string: mlua::Table = lua.globals().get("string")?;
    let budget = Rc::into_raw(budget);
    let functions: [(&CStr, ffi::lua_CFunction); 5] = [
        (c"find", str_find),
        (c"match", str_match),
        (c"gmatch", str_gmatch),
        (c"gsub", str_gsub),
        (c"rep", super::rep::str_rep),
    ];
    // SAFETY: plain stack work in a protected call; the userdata owns the
    // Rc from here on (its __gc frees it).
    unsafe {
        lua.exec_raw::<()>(string, |state| {
            let cell = ffi::lua_newuserdatauv(state, std::mem::size_of::<*const Budget>(), 0)
                as *mut *const Budget;
            cell.write(budget);
            ffi::lua_createtable(state, 0, 1);
            ffi::lua_pushcfunction(state, drop_budget);
            ffi::lua_setfield(state, -2, c"__gc".as_ptr());
            ffi::lua_setmetatable(state, -2);
            for (name, f) in functions {
                ffi::lua_pushvalue(state, -1);
                ffi::lua_pushcclosure(state, f, 1);
                ffi::lua_setfield(state, 1, name.as_ptr());
            }
            guarded::install(state, ffi::lua_gettop(state));
            ffi::lua_pop(state, 1);
        })
    }
}

#[cfg(test)]
#[path = "patterns_tests.rs"]
mod tests;
