//! A chunked body (RFC 9112 §7.1) checked as it passes: chunk sizes in
//! hex, extensions, CRLFs, the last chunk and the trailer section. The
//! bytes are relayed as they came; the scanner only says where the body
//! ends, or that it is malformed (the exchange then ends: a server's
//! broken body cuts the client's response, as hyper's decoder does).

/// Where a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// All of the input is body; more follows.
    More,
    /// The body ends after this many bytes of the input (the rest is the
    /// next message's).
    Done(usize),
    /// Malformed, and why.
    Bad(&'static str),
}

/// The scanner's state between reads; a few bytes.
#[derive(Debug, Clone, Default)]
pub struct Chunked {
    _state: (),
}

impl Chunked {
    pub fn new() -> Chunked {
        Chunked::default()
    }

    /// Scans the next bytes of the body.
    pub fn feed(&mut self, input: &[u8]) -> Step {
        let _ = input;
        todo!("wire::chunked::Chunked::feed")
    }
}
