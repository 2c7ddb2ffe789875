//! Egress rules of a sandbox in network mode `nat`: one entry is an IPv4
//! address or CIDR, optionally with `:PORT` (`10.0.0.0/8`, `1.2.3.4:443`).
//! Parsing lives here so every surface (native JSON, the CLI's
//! `--allow-out`/`--deny-out`, E2B's `allowOut`/`denyOut`) refuses the same
//! bad entries with `INVALID_ARGUMENT` naming its own field. Domain names
//! are refused by name: godel matches packets by address only.

use std::net::Ipv4Addr;

use crate::error::{Error, Result};

/// One parsed egress entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetRule {
    pub net: Ipv4Addr,
    pub prefix: u8,
    pub port: Option<u16>,
}

impl std::fmt::Display for NetRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Parse one entry; `field` names it in the error (`network.allow[2]`).
pub fn parse_net_rule(field: &str, s: &str) -> Result<NetRule> {
    let bad = |why: &str| Error::invalid(format!("{field} {s:?}: {why}"));
    let shape =
        "expected an IPv4 address or CIDR, optionally with :PORT (e.g. 10.0.0.0/8 or 1.2.3.4:443)";
    let t = s.trim();
    if t.is_empty() {
        return Err(bad(shape));
    }
    if t.contains("::") || t.matches(':').count() > 1 {
        return Err(bad("IPv6 is not routed to sandboxes; use IPv4 addresses"));
    }
    let (net, port) = match t.rsplit_once(':') {
        Some((n, p)) => (n, Some(p.parse::<u16>().map_err(|_| bad(shape))?)),
        None => (t, None),
    };
    let (addr, prefix) = match net.split_once('/') {
        Some((a, p)) => (a, p.parse::<u8>().map_err(|_| bad(shape))?),
        None => (net, 32),
    };
    let addr: Ipv4Addr = match addr.parse() {
        Ok(a) => a,
        Err(_) if looks_like_domain(addr) => {
            return Err(bad(
                "domain names are not supported by godel (egress is filtered by address); use IPv4 addresses or CIDRs",
            ));
        }
        Err(_) => return Err(bad(shape)),
    };
    if prefix > 32 || port == Some(0) {
        return Err(bad(shape));
    }
    Ok(NetRule {
        net: addr,
        prefix,
        port,
    })
}

/// Parse a list; entries are named `{field}[i]`.
pub fn parse_net_rules(field: &str, entries: &[String]) -> Result<Vec<NetRule>> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| parse_net_rule(&format!("{field}[{i}]"), e))
        .collect()
}

fn looks_like_domain(s: &str) -> bool {
    s.contains('.')
        && s.chars().any(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn entries_parse_strictly_and_errors_name_the_field() {
        let r = parse_net_rule("network.allow[0]", "10.0.0.0/8:443").unwrap();
        assert_eq!(r.to_string(), "10.0.0.0/8:443");
        assert_eq!(parse_net_rule("f", "1.2.3.4").unwrap().prefix, 32);
        assert_eq!(parse_net_rule("f", "0.0.0.0/0").unwrap().prefix, 0);
        for bad in ["10.0.0.0/33", "x", "1.2.3.4:0", "::1", "1.2.3.4:http", ""] {
            let e = parse_net_rule("network.denyOut[3]", bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad}");
            assert!(e.message.starts_with("network.denyOut[3]"), "{}", e.message);
        }
        let e = parse_net_rules("allowOut", &["1.1.1.1".into(), "example.com".into()]).unwrap_err();
        assert!(e.message.contains("allowOut[1]") && e.message.contains("domain names"));
    }
}
