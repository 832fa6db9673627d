//! The stats page: one self-contained HTML file (its script and style
//! inline, nothing fetched from elsewhere) built into the binary. It
//! polls `GET /api/status` every second and draws every listener, pool
//! and server; requests per second are computed in the page from
//! successive counters. The drain / ready / maint buttons post to the
//! API. A token set, a browser opens `/?token=TOKEN` once and the
//! cookie carries it from then on (see `auth`).

pub const HTML: &str = include_str!("page.html");
