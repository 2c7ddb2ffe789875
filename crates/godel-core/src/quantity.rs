//! Kubernetes-style quantities: CPU (`0.5`, `1.5`, `500m`, `2`) and bytes
//! (`512Mi`, `2Gi`, `1G`, `1048576`). Parsing is strict: anything malformed
//! is an `INVALID_ARGUMENT` error that names the input.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A CPU amount in millicores (1000 = one core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cpu(pub u64);

/// An amount of bytes (memory or disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Cpu {
    /// Millicores.
    pub fn millis(self) -> u64 {
        self.0
    }
    /// Cores as a float.
    pub fn cores(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl Bytes {
    pub fn get(self) -> u64 {
        self.0
    }
    pub fn mib(self) -> u64 {
        self.0 / (1024 * 1024)
    }
}

/// Split a decimal number with an optional fractional part into (integer, fraction digits).
fn parse_decimal(num: &str) -> Option<(u128, u128, u32)> {
    if num.is_empty() || num.starts_with('+') || num.starts_with('-') {
        return None;
    }
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 9 || int.len() > 20 {
        return None;
    }
    let i: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let f: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    Some((i, f, frac.len() as u32))
}

/// Parse a CPU quantity: `2`, `0.5`, `1.5`, `250m`.
pub fn parse_cpu(s: &str) -> Result<Cpu> {
    let bad = || {
        Error::invalid(format!(
            "malformed CPU quantity {s:?}: expected cores like \"0.5\", \"2\" or millicores like \"500m\""
        ))
    };
    let t = s.trim();
    let (num, milli) = match t.strip_suffix('m') {
        Some(n) => (n, true),
        None => (t, false),
    };
    let (i, f, digits) = parse_decimal(num).ok_or_else(bad)?;
    let millis = if milli {
        if digits > 0 {
            return Err(bad());
        }
        i
    } else {
        let scale = 10u128.pow(digits);
        let total = i * 1000 + (f * 1000) / scale;
        if (f * 1000) % scale != 0 {
            return Err(Error::invalid(format!(
                "CPU quantity {s:?} is finer than one millicore"
            )));
        }
        total
    };
    if millis == 0 {
        return Err(Error::invalid(format!(
            "CPU quantity {s:?} must be above zero"
        )));
    }
    if millis > 1_000_000_000 {
        return Err(Error::invalid(format!("CPU quantity {s:?} is too large")));
    }
    Ok(Cpu(millis as u64))
}

/// Parse a byte quantity: `512Mi`, `2Gi`, `1G`, `100k`, `1048576`, `1.5Gi`.
pub fn parse_bytes(s: &str) -> Result<Bytes> {
    let bad = || {
        Error::invalid(format!(
            "malformed byte quantity {s:?}: expected a number with an optional suffix Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E (e.g. \"512Mi\", \"2Gi\")"
        ))
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let mult: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return Err(bad()),
    };
    let (i, f, digits) = parse_decimal(num).ok_or_else(bad)?;
    let scale = 10u128.pow(digits);
    let total = i
        .checked_mul(mult)
        .and_then(|v| v.checked_add(f * mult / scale))
        .ok_or_else(|| Error::invalid(format!("byte quantity {s:?} is too large")))?;
    if total > u64::MAX as u128 {
        return Err(Error::invalid(format!("byte quantity {s:?} is too large")));
    }
    Ok(Bytes(total as u64))
}

impl FromStr for Cpu {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_cpu(s)
    }
}

impl FromStr for Bytes {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_bytes(s)
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("Ti", 1 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{}", self.0 / size, name);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Accept either a JSON string (`"0.5"`, `"500m"`) or a JSON number (`0.5`).
#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    S(String),
    U(u64),
    F(f64),
}

impl StrOrNum {
    fn into_string(self) -> String {
        match self {
            StrOrNum::S(s) => s,
            StrOrNum::U(u) => u.to_string(),
            StrOrNum::F(f) => format!("{f}"),
        }
    }
}

impl Serialize for Cpu {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw = StrOrNum::deserialize(d)?.into_string();
        parse_cpu(&raw).map_err(|e| serde::de::Error::custom(e.message))
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw = StrOrNum::deserialize(d)?.into_string();
        parse_bytes(&raw).map_err(|e| serde::de::Error::custom(e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu("0.5").unwrap(), Cpu(500));
        assert_eq!(parse_cpu("1.5").unwrap(), Cpu(1500));
        assert_eq!(parse_cpu("2").unwrap(), Cpu(2000));
        assert_eq!(parse_cpu("250m").unwrap(), Cpu(250));
        assert_eq!(parse_cpu(".25").unwrap(), Cpu(250));
        for bad in [
            "", "abc", "-1", "0", "1.5m", "1..5", "0.0001", "1 core", "1e3", "+2", ".",
        ] {
            let e = parse_cpu(bad).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn byte_quantities() {
        assert_eq!(parse_bytes("512Mi").unwrap(), Bytes(512 << 20));
        assert_eq!(parse_bytes("2Gi").unwrap(), Bytes(2 << 30));
        assert_eq!(parse_bytes("1G").unwrap(), Bytes(1_000_000_000));
        assert_eq!(parse_bytes("1.5Gi").unwrap(), Bytes(3 << 29));
        assert_eq!(parse_bytes("4096").unwrap(), Bytes(4096));
        assert_eq!(parse_bytes("100k").unwrap(), Bytes(100_000));
        for bad in [
            "",
            "512MB",
            "Mi",
            "2gi",
            "-1Gi",
            "1.2.3Gi",
            "99999999999Ei",
            "12 Mi",
            "0x10",
        ] {
            let e = parse_bytes(bad).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::InvalidArgument, "{bad}");
            assert!(e.message.contains(bad.trim()) || bad.is_empty());
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["512Mi", "2Gi", "4000", "1Ki"] {
            assert_eq!(parse_bytes(s).unwrap().to_string(), s);
        }
        for s in ["2", "500m", "1500m"] {
            assert_eq!(parse_cpu(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn serde_accepts_strings_and_numbers() {
        let c: Cpu = serde_json::from_str("0.5").unwrap();
        assert_eq!(c, Cpu(500));
        let c: Cpu = serde_json::from_str("\"2\"").unwrap();
        assert_eq!(c, Cpu(2000));
        let b: Bytes = serde_json::from_str("\"512Mi\"").unwrap();
        assert_eq!(b, Bytes(512 << 20));
        assert!(serde_json::from_str::<Bytes>("\"lots\"").is_err());
    }
}
