//! Asking DNS, with hickory-resolver: a name's addresses, an SRV name's
//! records and their targets' addresses.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

use super::{Found, Query, Resolvers, ATTEMPTS, QUERY_TIMEOUT};

/// A DNS client for one set of [`Resolvers`]. It caches nothing: each
/// question goes to the DNS server (the refresh interval is the pool's
/// `resolve`, as nginx's `valid=` overrides the TTL).
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// Must be called inside a tokio runtime (its queries run there).
    /// Errors: the system's configuration cannot be read.
    pub fn new(which: &Resolvers) -> Result<Resolver, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if which.system() {
            TokioResolver::builder(provider).map_err(|e| {
                format!("cannot read the system's DNS configuration (/etc/resolv.conf): {e}")
            })?
        } else {
            let servers = which
                .0
                .iter()
                .map(|a| {
                    let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                    for c in &mut ns.connections {
                        c.port = a.port();
                    }
                    ns
                })
                .collect();
            let mut b = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                provider,
            );
            // Named resolvers answer alone (nginx's `resolver` does not
            // read /etc/hosts either).
            b.options_mut().use_hosts_file = ResolveHosts::Never;
            b
        };
        let o = builder.options_mut();
        o.timeout = QUERY_TIMEOUT;
        // hickory's `attempts` counts the tries after the first.
        o.attempts = ATTEMPTS - 1;
        o.cache_size = 0;
        o.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let inner = builder
            .build()
            .map_err(|e| format!("cannot make a DNS resolver: {e}"))?;
        Ok(Resolver { inner })
    }

    /// Every address `query` gives now. Errors say why in a few words
    /// (`no such name (NXDOMAIN)`, `no answer within 4s (2 tries of 2s)`).
    pub async fn find(&self, query: &Query) -> Result<Vec<Found>, String> {
        match query {
            Query::Host { host, port } => {
                let host: Arc<str> = Arc::from(host.as_str());
                let ips = self.addresses(&host).await?;
                Ok(ips
                    .into_iter()
                    .map(|ip| Found {
                        addr: SocketAddr::new(ip, *port),
                        host: host.clone(),
                        srv: None,
                    })
                    .collect())
            }
            Query::Srv(name) => {
                let lookup = self
                    .inner
                    .srv_lookup(name.as_str())
                    .await
                    .map_err(|e| describe(&e))?;
                let mut out = Vec::new();
                // A target that has no address is left out (its server is
                // gone); one whose lookup failed otherwise fails the
                // whole answer: the DNS server is not answering, and a
                // part of its answer would drop servers that are there.
                let mut missing = None;
                for record in lookup.answers() {
                    let RData::SRV(srv) = &record.data else {
                        continue;
                    };
                    let target = srv.target.to_utf8();
                    let target = target.trim_end_matches('.');
                    // "." : the service is decidedly not available here.
                    if target.is_empty() {
                        continue;
                    }
                    let host: Arc<str> = Arc::from(target);
                    let ips = match self.inner.lookup_ip(&*host).await {
                        Ok(ips) => ips.iter().collect::<Vec<_>>(),
                        Err(e) if e.is_no_records_found() => Vec::new(),
                        Err(e) => return Err(format!("its target {target}: {}", describe(&e))),
                    };
                    if ips.is_empty() {
                        missing.get_or_insert_with(|| target.to_string());
                    }
                    out.extend(ips.into_iter().map(|ip| Found {
                        addr: SocketAddr::new(ip, srv.port),
                        host: host.clone(),
                        srv: Some((srv.priority, srv.weight)),
                    }));
                }
                if out.is_empty() {
                    return Err(match missing {
                        Some(target) => format!("its target {target} has no address"),
                        None => "no SRV record with a target".into(),
                    });
                }
                Ok(out)
            }
        }
    }

    async fn addresses(&self, host: &str) -> Result<Vec<std::net::IpAddr>, String> {
        let ips = self.inner.lookup_ip(host).await.map_err(|e| describe(&e))?;
        let ips: Vec<std::net::IpAddr> = ips.iter().collect();
        if ips.is_empty() {
            return Err("no address records".into());
        }
        Ok(ips)
    }
}

/// A resolver's error in a few words.
fn describe(e: &NetError) -> String {
    if e.is_nx_domain() {
        "no such name (NXDOMAIN)".into()
    } else if e.is_no_records_found() {
        "no records of that kind".into()
    } else if matches!(e, NetError::Timeout) {
        format!(
            "no answer within {:?} ({ATTEMPTS} tries of {:?})",
            QUERY_TIMEOUT * ATTEMPTS as u32,
            QUERY_TIMEOUT
        )
    } else {
        e.to_string()
    }
}

/// [`Resolver::find`] from code that is not async (the policy's load), on
/// a thread of its own: a load may run inside the control thread's
/// runtime, which it must not block on.
pub fn find_blocking(which: &Resolvers, query: &Query) -> Result<Vec<Found>, String> {
    find_all_blocking(which, std::slice::from_ref(query))
        .pop()
        .unwrap_or_else(|| Err("the DNS client failed".into()))
}

/// Every query's answer, in their order, asked all at once: a load with
/// many names waits about as long as for the slowest, not for their sum
/// (a DNS server that does not answer costs its timeouts once).
pub fn find_all_blocking(which: &Resolvers, queries: &[Query]) -> Vec<Result<Vec<Found>, String>> {
    let failed = |why: String| queries.iter().map(|_| Err(why.clone())).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return failed(format!("cannot start a DNS client: {e}")),
            };
            rt.block_on(async {
                let resolver = match Resolver::new(which) {
                    Ok(r) => r,
                    Err(e) => return failed(e),
                };
                let mut asked = tokio::task::JoinSet::new();
                for (i, q) in queries.iter().enumerate() {
                    let (resolver, q) = (resolver.clone(), q.clone());
                    asked.spawn(async move { (i, resolver.find(&q).await) });
                }
                let mut out: Vec<Result<Vec<Found>, String>> =
                    failed("the DNS client failed".into());
                while let Some(done) = asked.join_next().await {
                    if let Ok((i, answer)) = done {
                        out[i] = answer;
                    }
                }
                out
            })
        })
        .join()
        .unwrap_or_else(|_| failed("the DNS client failed".into()))
    })
}
