//! This daemon's identity as a replica: its id (kept in
//! `$GODEL_HOME/replica-id`, so a restarted daemon is the same replica and
//! re-adopts what it owns), its machine's name, and the addresses its
//! peers forward requests to.

use std::path::Path;

use godel_core::{Error, Result};

/// Accept an id given on the command line: letters, digits, `-`, `_`, `.`.
pub fn check_id(id: &str) -> Result<String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(Error::invalid(format!(
            "replica id {id:?}: 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(id.to_string())
}

/// The id kept in `home`, made on first use (`<host>-<8 hex>`).
pub fn home_id(home: &Path) -> Result<String> {
    let path = home.join("replica-id");
    if let Ok(s) = std::fs::read_to_string(&path)
        && let Ok(id) = check_id(s.trim())
    {
        return Ok(id);
    }
    let host: String = host_name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let id = format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let tmp = home.join("replica-id.tmp");
    std::fs::write(&tmp, format!("{id}\n"))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(format!("write {}", path.display()), &e))?;
    Ok(id)
}

/// This machine's name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The address to advertise: the one given (checked), else `http://` and
/// the bound address (this machine's name for an unspecified IP), else
/// nothing (no listener: peers cannot forward here).
pub fn advertise(given: Option<&str>, bound: Option<&tokio::net::TcpListener>) -> Result<String> {
    if let Some(g) = given {
        let url: url::Url = g
            .parse()
            .map_err(|e| Error::invalid(format!("advertise address {g:?}: {e}")))?;
        if url.scheme() != "http" || url.host_str().is_none() {
            return Err(Error::invalid(format!(
                "advertise address {g:?}: expected http://HOST:PORT (peers speak plain HTTP to each other)"
            )));
        }
        return Ok(g.trim_end_matches('/').to_string());
    }
    let Some(addr) = bound.and_then(|l| l.local_addr().ok()) else {
        return Ok(String::new());
    };
    let host = if addr.ip().is_unspecified() {
        host_name()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    Ok(format!("http://{host}:{}", addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kept_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let a = home_id(dir.path()).unwrap();
        assert_eq!(
            home_id(dir.path()).unwrap(),
            a,
            "the same home is the same replica"
        );
        assert!(check_id("a/b").is_err());
        assert!(check_id("").is_err());
        assert_eq!(check_id("r-1.x_2").unwrap(), "r-1.x_2");
    }

    #[test]
    fn advertise_addresses_are_plain_http() {
        assert_eq!(advertise(None, None).unwrap(), "");
        assert_eq!(
            advertise(Some("http://10.0.0.2:7070/"), None).unwrap(),
            "http://10.0.0.2:7070"
        );
        assert!(advertise(Some("https://x:1"), None).is_err());
        assert!(advertise(Some("not a url"), None).is_err());
    }
}
