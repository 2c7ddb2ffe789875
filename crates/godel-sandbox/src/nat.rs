//! The opt-in `nat` network mode: a veth pair per agent, a /30 per agent out
//! of `10.200.0.0/14` (used only on this host's own veths), and one nftables
//! table per agent (`inet godel_<slot>`) that enforces, in order:
//! 1. anti-spoofing: packets from the agent's veth must carry its address;
//! 2. replies to connections the agent opened are accepted;
//! 3. nothing reaches another agent: any destination in `10.200.0.0/14`
//!    except the agent's own gateway is rejected;
//! 4. the allowlist (`CIDR` or `CIDR:PORT`, TCP and UDP) is accepted;
//! 5. with `internet` (E2B's default), the deny list is rejected and
//!    everything else forwarded; without it (the native default) everything
//!    else is rejected (`admin-prohibited`, so callers fail fast). Traffic
//!    to the host itself only ever passes the allowlist;
//! 6. nothing from elsewhere may open a connection into the agent;
//! 7. egress is masqueraded.
//!
//! The same rules hook `input` (traffic to the host itself) and `forward`.
//! Removing the table and the veth undoes everything. IPv6 is not routed.
//! A running agent's lists are replaced in one nftables transaction
//! ([`update`]).

use std::net::Ipv4Addr;

use godel_core::{
    Error, NetRule, NetworkConfig, NetworkMode, Result, parse_net_rule, parse_net_rules,
};

use crate::hostops::HostOps;
use crate::init::NatSetup;
use crate::launcher::JailConfig;
use crate::namespace::JailHandle;

/// The block agents' /30s come from.
pub const NAT_BASE: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 0);
pub const NAT_PREFIX: u8 = 14;

/// Addresses of slot `slot`.
pub fn nat_setup(slot: u32) -> NatSetup {
    let base = u32::from(NAT_BASE) + slot * 4;
    NatSetup {
        host_if: format!("gv{slot}"),
        host_ip: Ipv4Addr::from(base + 1).to_string(),
        agent_ip: Ipv4Addr::from(base + 2).to_string(),
        prefix_len: 30,
    }
}

/// One egress entry (see [`godel_core::netrule`]).
pub type AllowRule = NetRule;

/// Parse `CIDR`, `CIDR:PORT`, `ADDR` or `ADDR:PORT` (IPv4).
pub fn parse_allow(s: &str) -> Result<AllowRule> {
    parse_net_rule("network.allow entry", s)
}

/// The egress rules of one agent, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Accepted first (the allowlist, plus the DNS servers on port 53).
    pub allow: Vec<NetRule>,
    /// Rejected next.
    pub deny: Vec<NetRule>,
    /// The rest of the outside world is reachable (the host itself never is,
    /// except through `allow`).
    pub internet: bool,
}

impl Rules {
    /// Parse a network config's lists (errors name the field).
    pub fn of(net: &NetworkConfig) -> Result<Rules> {
        let mut allow = parse_net_rules("network.allow", &net.allow)?;
        for d in &net.dns {
            allow.push(parse_allow(&format!("{d}:53"))?);
        }
        Ok(Rules {
            allow,
            deny: parse_net_rules("network.deny", &net.deny)?,
            internet: net.internet,
        })
    }
}

fn matches(r: &NetRule, verdict: &str, out: &mut String) {
    let dst = format!("ip daddr {}/{}", r.net, r.prefix);
    match r.port {
        Some(p) => {
            out.push_str(&format!("  {dst} tcp dport {p} {verdict}\n"));
            out.push_str(&format!("  {dst} udp dport {p} {verdict}\n"));
        }
        None => out.push_str(&format!("  {dst} {verdict}\n")),
    }
}

const REJECT: &str = "reject with icmpx type admin-prohibited";

/// One chain of agent rules; `outside` is whether the final verdict lets
/// unmatched traffic through (forwarded traffic with `internet`).
fn agent_chain(name: &str, nat: &NatSetup, rules: &Rules, outside: bool) -> String {
    let mut c = format!(
        " chain {name} {{\n  ip saddr != {a} drop\n  ct state established,related accept\n  ip daddr {NAT_BASE}/{NAT_PREFIX} ip daddr != {g} {REJECT}\n  meta nfproto ipv6 {REJECT}\n",
        a = nat.agent_ip,
        g = nat.host_ip
    );
    for r in &rules.allow {
        matches(r, "accept", &mut c);
    }
    if outside {
        for r in &rules.deny {
            matches(r, REJECT, &mut c);
        }
        c.push_str("  accept\n");
    } else {
        c.push_str(&format!("  {REJECT}\n"));
    }
    c.push_str(" }\n");
    c
}

/// The nftables table for one agent.
pub fn ruleset(slot: u32, nat: &NatSetup, rules: &Rules) -> String {
    let t = format!("godel_{slot}");
    let i = &nat.host_if;
    format!(
        "table inet {t} {{\n{agent}{host} chain forward {{\n  type filter hook forward priority 0; policy accept;\n  iifname \"{i}\" jump agent\n  oifname \"{i}\" ct state established,related accept\n  oifname \"{i}\" drop\n }}\n chain input {{\n  type filter hook input priority 0; policy accept;\n  iifname \"{i}\" jump agent_host\n }}\n chain postrouting {{\n  type nat hook postrouting priority srcnat; policy accept;\n  ip saddr {a} oifname != \"{i}\" masquerade\n }}\n}}\n",
        agent = agent_chain("agent", nat, rules, rules.internet),
        host = agent_chain("agent_host", nat, rules, false),
        a = nat.agent_ip
    )
}

/// Install the agent's table (daemon side, before the init starts).
pub fn install(ops: &dyn HostOps, slot: u32, nat: &NatSetup, rules: &Rules) -> Result<()> {
    remove(ops, slot);
    ops.run(&["nft", &ruleset(slot, nat, rules)])
        .map_err(|e| Error::spawn(format!("cannot install the network allowlist: {e}")))?;
    // Egress needs forwarding on; godel never turns it off again (other users may rely on it).
    ops.write(std::path::Path::new("/proc/sys/net/ipv4/ip_forward"), "1")
        .map_err(|e| Error::io("enable IPv4 forwarding", &e))?;
    Ok(())
}

/// Replace a running agent's rules in one nftables transaction (no moment
/// without rules). The jail must have been made in network mode `nat`.
pub fn update(
    ops: &dyn HostOps,
    handle: &JailHandle,
    cfg: &JailConfig,
    network: &NetworkConfig,
) -> Result<()> {
    if cfg.network.mode != NetworkMode::Nat || handle.veth.is_none() {
        return Err(Error::invalid(format!(
            "sandbox {}: its network rules cannot change because it was made without network (mode none); create it with network mode nat",
            cfg.id
        )));
    }
    if network.mode != NetworkMode::Nat {
        return Err(Error::invalid(
            "network.mode cannot change on a running sandbox (it stays nat)",
        ));
    }
    let mut net = network.clone();
    net.dns = cfg.network.dns.clone();
    let rules = Rules::of(&net)?;
    let slot = handle.slot;
    let script = format!(
        "add table inet godel_{slot}\ndelete table inet godel_{slot}\n{}",
        ruleset(slot, &nat_setup(slot), &rules)
    );
    ops.run(&["nft", &script])
        .map_err(|e| Error::internal(format!("cannot replace the network rules: {e}")))?;
    Ok(())
}

/// Remove the agent's table and veth. Idempotent.
pub fn remove(ops: &dyn HostOps, slot: u32) {
    let _ = ops.run(&["nft", "delete", "table", "inet", &format!("godel_{slot}")]);
    let _ = ops.run(&["ip", "link", "delete", &format!("gv{slot}")]);
}

fn run(argv: &[&str]) -> std::result::Result<(), String> {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Create the veth pair into the init's network namespace (stage 1, host root).
pub fn setup_veth(nat: &NatSetup, pid: u32) -> std::result::Result<(), String> {
    let pid_s = pid.to_string();
    let netns = format!("--net=/proc/{pid}/ns/net");
    let host_cidr = format!("{}/{}", nat.host_ip, nat.prefix_len);
    let agent_cidr = format!("{}/{}", nat.agent_ip, nat.prefix_len);
    let _ = run(&["ip", "link", "delete", &nat.host_if]);
    run(&[
        "ip",
        "link",
        "add",
        &nat.host_if,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &pid_s,
    ])?;
    run(&["ip", "addr", "add", &host_cidr, "dev", &nat.host_if])?;
    run(&["ip", "link", "set", &nat.host_if, "up"])?;
    run(&[
        "nsenter",
        &netns,
        "ip",
        "addr",
        "add",
        &agent_cidr,
        "dev",
        "eth0",
    ])?;
    run(&["nsenter", &netns, "ip", "link", "set", "eth0", "up"])?;
    run(&[
        "nsenter",
        &netns,
        "ip",
        "route",
        "add",
        "default",
        "via",
        &nat.host_ip,
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostops::{HostOp, RecordingHostOps};

    #[test]
    fn slots_get_disjoint_30s() {
        let a = nat_setup(0);
        let b = nat_setup(1);
        assert_eq!(a.host_ip, "10.200.0.1");
        assert_eq!(a.agent_ip, "10.200.0.2");
        assert_eq!(b.host_ip, "10.200.0.5");
        assert_eq!(nat_setup(65535).agent_ip, "10.203.255.254");
    }

    #[test]
    fn allow_entries_parse_strictly() {
        assert_eq!(
            parse_allow("10.0.0.0/8:443").unwrap(),
            AllowRule {
                net: Ipv4Addr::new(10, 0, 0, 0),
                prefix: 8,
                port: Some(443)
            }
        );
        assert_eq!(parse_allow("1.2.3.4").unwrap().prefix, 32);
        for bad in ["10.0.0.0/33", "x", "1.2.3.4:0", "::1", "1.2.3.4:http"] {
            assert!(parse_allow(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ruleset_blocks_other_agents_before_the_allowlist() {
        let nat = nat_setup(3);
        let rules = Rules {
            allow: vec![parse_allow("10.0.0.0/8").unwrap()],
            ..Default::default()
        };
        let rs = ruleset(3, &nat, &rules);
        let other = rs
            .find("ip daddr 10.200.0.0/14 ip daddr != 10.200.0.13 reject")
            .unwrap();
        let allowed = rs.find("ip daddr 10.0.0.0/8 accept").unwrap();
        let last = rs
            .rfind("  reject with icmpx type admin-prohibited\n")
            .unwrap();
        assert!(other < allowed && allowed < last, "{rs}");
        assert!(rs.contains("ip saddr != 10.200.0.14 drop"));
        assert!(rs.contains("oifname \"gv3\" drop"));
    }

    #[test]
    fn install_and_remove_sequence() {
        let ops = RecordingHostOps::new();
        let nat = nat_setup(1);
        install(&ops, 1, &nat, &Rules::default()).unwrap();
        let rec = ops.recorded();
        assert_eq!(
            rec[0],
            HostOp::Run(vec![
                "nft".into(),
                "delete".into(),
                "table".into(),
                "inet".into(),
                "godel_1".into()
            ])
        );
        assert!(
            matches!(&rec[2], HostOp::Run(a) if a[0] == "nft" && a[1].starts_with("table inet godel_1"))
        );
        assert_eq!(
            rec[3],
            HostOp::Write("/proc/sys/net/ipv4/ip_forward".into(), "1".into())
        );
    }
}
