//! The opt-in `nat` network mode: a veth pair per agent, a /30 per agent out
//! of `10.200.0.0/14` (used only on this host's own veths), and one nftables
//! table per agent (`inet godel_<slot>`) that enforces, in order:
//! 1. anti-spoofing: packets from the agent's veth must carry its address;
//! 2. replies to connections the agent opened are accepted;
//! 3. nothing reaches another agent: any destination in `10.200.0.0/14`
//!    except the agent's own gateway is rejected;
//! 4. the allowlist (`CIDR` or `CIDR:PORT`, TCP and UDP) is accepted;
//! 5. everything else is rejected (`admin-prohibited`, so callers fail fast);
//! 6. nothing from elsewhere may open a connection into the agent;
//! 7. egress is masqueraded.
//!
//! The same rules hook `input` (traffic to the host itself) and `forward`.
//! Removing the table and the veth undoes everything. IPv6 is not routed.

use std::net::Ipv4Addr;

use godel_core::{Error, Result};

use crate::hostops::HostOps;
use crate::init::NatSetup;

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

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub net: Ipv4Addr,
    pub prefix: u8,
    pub port: Option<u16>,
}

/// Parse `CIDR`, `CIDR:PORT`, `ADDR` or `ADDR:PORT` (IPv4).
pub fn parse_allow(s: &str) -> Result<AllowRule> {
    let bad = || {
        Error::invalid(format!(
            "network.allow entry {s:?}: expected an IPv4 CIDR, optionally with :PORT (e.g. 10.0.0.0/8:443)"
        ))
    };
    let (net, port) = match s.rsplit_once(':') {
        Some((n, p)) => (n, Some(p.parse::<u16>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let (addr, prefix) = match net.split_once('/') {
        Some((a, p)) => (a, p.parse::<u8>().map_err(|_| bad())?),
        None => (net, 32),
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    if prefix > 32 || port == Some(0) {
        return Err(bad());
    }
    Ok(AllowRule {
        net: addr,
        prefix,
        port,
    })
}

/// The nftables table for one agent.
pub fn ruleset(slot: u32, nat: &NatSetup, allow: &[AllowRule]) -> String {
    let t = format!("godel_{slot}");
    let i = &nat.host_if;
    let mut agent_rules = String::new();
    agent_rules.push_str(&format!(
        "  ip saddr != {a} drop\n  ct state established,related accept\n  ip daddr {NAT_BASE}/{NAT_PREFIX} ip daddr != {g} reject with icmpx type admin-prohibited\n  meta nfproto ipv6 reject with icmpx type admin-prohibited\n",
        a = nat.agent_ip,
        g = nat.host_ip
    ));
    for r in allow {
        let dst = format!("ip daddr {}/{}", r.net, r.prefix);
        match r.port {
            Some(p) => {
                agent_rules.push_str(&format!("  {dst} tcp dport {p} accept\n"));
                agent_rules.push_str(&format!("  {dst} udp dport {p} accept\n"));
            }
            None => agent_rules.push_str(&format!("  {dst} accept\n")),
        }
    }
    agent_rules.push_str("  reject with icmpx type admin-prohibited\n");
    format!(
        "table inet {t} {{\n chain agent {{\n{agent_rules} }}\n chain forward {{\n  type filter hook forward priority 0; policy accept;\n  iifname \"{i}\" jump agent\n  oifname \"{i}\" ct state established,related accept\n  oifname \"{i}\" drop\n }}\n chain input {{\n  type filter hook input priority 0; policy accept;\n  iifname \"{i}\" jump agent\n }}\n chain postrouting {{\n  type nat hook postrouting priority srcnat; policy accept;\n  ip saddr {a} oifname != \"{i}\" masquerade\n }}\n}}\n",
        a = nat.agent_ip
    )
}

/// Install the agent's table (daemon side, before the init starts).
pub fn install(ops: &dyn HostOps, slot: u32, nat: &NatSetup, allow: &[AllowRule]) -> Result<()> {
    remove(ops, slot);
    ops.run(&["nft", &ruleset(slot, nat, allow)])
        .map_err(|e| Error::spawn(format!("cannot install the network allowlist: {e}")))?;
    // Egress needs forwarding on; godel never turns it off again (other users may rely on it).
    ops.write(std::path::Path::new("/proc/sys/net/ipv4/ip_forward"), "1")
        .map_err(|e| Error::io("enable IPv4 forwarding", &e))?;
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
        let allow = vec![parse_allow("10.0.0.0/8").unwrap()];
        let rs = ruleset(3, &nat, &allow);
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
        install(&ops, 1, &nat, &[]).unwrap();
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
