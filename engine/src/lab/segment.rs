//! A shared Ethernet segment for the real lab: a bridge inside a network
//! namespace, with 10.213.x.0/24 on it, to which other namespaces (and the
//! root namespace, where the lab's load runs) are plugged by veth pairs.
//! What several hosts on one switch see: ARP, gratuitous ARP, an address
//! that two hosts claim at once.
//!
//! The bridge gets 10.213.x.1 (a gateway for what is plugged in); each
//! port is a veth whose bridge end is named by the caller and whose other
//! end goes into its namespace with 10.213.x.HOST/24. Pulling a port's
//! cable is `ip link set PORT down` on the bridge end.
//!
//! Safety: a root-namespace port gets an `unreachable` route for the /24
//! (metric 4000) before its link exists, as `real.rs` does for its /30s,
//! so nothing for the segment ever follows the default route out. `Drop`
//! removes the root-namespace ports and the route; the namespace holding
//! the bridge is its owner's to delete (which deletes the bridge and every
//! veth plugged into it).

use std::net::Ipv4Addr;

use super::real::ip;

/// The safety route's metric (above any connected route), as in `real.rs`.
const SAFETY_METRIC: &str = "4000";

/// A bridge in a namespace and the ports plugged into it.
pub struct Segment {
    /// The namespace holding the bridge.
    ns: String,
    bridge: String,
    /// The third byte of 10.213.x.0/24.
    x: u32,
    /// Ports whose far end is in the root namespace (deleted on drop).
    root_links: Vec<String>,
    /// The /24 while its safety route is in place.
    safety: Option<String>,
}

impl Segment {
    /// Makes bridge `bridge` in namespace `ns` (which must exist) with
    /// 10.213.`x`.1/24, up.
    pub fn build(ns: &str, bridge: &str, x: u32) -> Result<Segment, String> {
        let seg = Segment {
            ns: ns.to_string(),
            bridge: bridge.to_string(),
            x,
            root_links: Vec::new(),
            safety: None,
        };
        ip(&["-n", ns, "link", "add", bridge, "type", "bridge"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", seg.addr(1)),
            "dev",
            bridge,
        ])?;
        ip(&["-n", ns, "link", "set", bridge, "up"])?;
        Ok(seg)
    }

    /// 10.213.x.`host`.
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.x as u8, host)
    }

    /// The segment's network, `10.213.x.0/24`.
    pub fn net(&self) -> String {
        format!("10.213.{}.0/24", self.x)
    }

    /// Plugs namespace `peer` (None: the root namespace) into the bridge:
    /// a veth whose bridge end is `port` and whose far end is `ifname` in
    /// `peer`, with 10.213.x.`host`/24, both up. In the root namespace the
    /// safety route comes first.
    pub fn plug(
        &mut self,
        port: &str,
        peer: Option<&str>,
        ifname: &str,
        host: u8,
    ) -> Result<(), String> {
        let cidr = format!("{}/24", self.addr(host));
        match peer {
            Some(peer) => {
                ip(&[
                    "-n", &self.ns, "link", "add", port, "type", "veth", "peer", "name", ifname,
                    "netns", peer,
                ])?;
                ip(&["-n", peer, "addr", "add", &cidr, "dev", ifname])?;
                ip(&["-n", peer, "link", "set", ifname, "up"])?;
            }
            None => {
                if self.safety.is_none() {
                    let net = self.net();
                    ip(&["route", "add", "unreachable", &net, "metric", SAFETY_METRIC])?;
                    self.safety = Some(net);
                }
                ip(&[
                    "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", &self.ns,
                ])?;
                self.root_links.push(ifname.to_string());
                ip(&["addr", "add", &cidr, "dev", ifname])?;
                ip(&["link", "set", ifname, "up"])?;
            }
        }
        ip(&["-n", &self.ns, "link", "set", port, "master", &self.bridge])?;
        ip(&["-n", &self.ns, "link", "set", port, "up"])?;
        Ok(())
    }

    /// The cable of `port` in or out (its bridge end up or down).
    pub fn set_port(&self, port: &str, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.ns, "link", "set", port, state]).map(|_| ())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        for l in &self.root_links {
            let _ = ip(&["link", "del", l]);
        }
        if let Some(net) = self.safety.take() {
            let _ = ip(&["route", "del", "unreachable", &net, "metric", SAFETY_METRIC]);
        }
    }
}
