//! A cache of a `pocket.cdn` tier that refuses connections before its
//! check has noticed: with the tier's one retry its keys get the origin's
//! answer (the retry may not move a key to another cache, so it goes to the
//! fallback); with `retries = 0` they get a 502 (docs/stdlib.md, "One
//! retry"; examples/cdn-varnish/README.md).

mod common;
use common::*;

fn tier(
    cache: &OriginHandle,
    dead: std::net::SocketAddr,
    origin: &OriginHandle,
    retries: u32,
) -> String {
    format!(
        r#"local cdn = require "pocket.cdn"
local cache = cdn.tier {{
  servers = {{ "{}", "{dead}" }},
  fallback = "origin",
  retries = {retries},
  check = {{ tcp = true, interval = "60s" }},      -- never notices here
}}
cache.passive = false                             -- nor does live traffic
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "cache" }} }},
  pools = {{ origin = {{ servers = {{ "{}" }} }}, cache = cache }},
}}
"#,
        cache.addr, origin.addr
    )
}

/// Status and origin name of GET `path` for each of 40 keys.
async fn answers(pocket: &Pocket) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for i in 0..40 {
        let r = get(pocket.addr("web"), &format!("/k{i}.css")).await;
        out.push((r.status, r.header("x-origin").unwrap_or_default()));
    }
    out
}

#[tokio::test]
async fn a_refusing_cache_sends_its_keys_to_the_origin_with_one_retry() {
    let (cache, origin) = (origin("C"), origin("O"));
    let pocket = Pocket::start(&tier(&cache, dead_addr(), &origin, 1), 1);
    let got = answers(&pocket).await;
    assert!(got.iter().all(|(s, _)| *s == 200), "{got:?}");
    let to_origin = got.iter().filter(|(_, o)| o == "O").count();
    assert!(
        to_origin > 0 && to_origin < got.len(),
        "the dead cache's keys, and only those, go to the origin: {got:?}"
    );
}

#[tokio::test]
async fn a_refusing_cache_gives_502_with_no_retry() {
    let (cache, origin) = (origin("C"), origin("O"));
    let pocket = Pocket::start(&tier(&cache, dead_addr(), &origin, 0), 1);
    let got = answers(&pocket).await;
    assert!(got.iter().all(|(s, o)| *s == 502 || o == "C"), "{got:?}");
    assert!(got.iter().any(|(s, _)| *s == 502), "{got:?}");
}
