//! Which printer to use, written as one string so it fits a config file, an
//! environment variable and a settings field alike.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::PrintError;

/// A receipt printer, as configured: `none`, `network:HOST:PORT` (network
/// printers listen on 9100), `file:PATH` (also `file:/dev/usb/lp0`) or
/// `usb:VID:PID` in hex (`usb:04b8:0e15`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum PrinterSpec {
    #[default]
    None,
    /// `host` is a name or an IP address; an IPv6 address is kept without
    /// brackets and written with them (`network:[fe80::1]:9100`).
    Network {
        host: String,
        port: u16,
    },
    File {
        path: PathBuf,
    },
    Usb {
        vendor_id: u16,
        product_id: u16,
    },
}

impl PrinterSpec {
    /// Whether there is a printer to send to at all.
    pub fn is_none(&self) -> bool {
        matches!(self, PrinterSpec::None)
    }
}

impl fmt::Display for PrinterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrinterSpec::None => f.write_str("none"),
            PrinterSpec::Network { host, port } if host.contains(':') => {
                write!(f, "network:[{host}]:{port}")
            }
            PrinterSpec::Network { host, port } => write!(f, "network:{host}:{port}"),
            PrinterSpec::File { path } => write!(f, "file:{}", path.display()),
            PrinterSpec::Usb {
                vendor_id,
                product_id,
            } => write!(f, "usb:{vendor_id:04x}:{product_id:04x}"),
        }
    }
}

impl FromStr for PrinterSpec {
    type Err = PrintError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| PrintError::InvalidSpec {
            spec: text.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("none") {
            return Ok(PrinterSpec::None);
        }
        let Some((kind, rest)) = trimmed.split_once(':') else {
            return Err(invalid("unknown kind of printer"));
        };
        match kind.to_ascii_lowercase().as_str() {
            "network" => parse_network(rest).map_err(invalid),
            "file" if rest.is_empty() => Err(invalid("the file path is missing")),
            // Inner spaces are part of the path; only the ends of the spec are trimmed.
            "file" => Ok(PrinterSpec::File {
                path: PathBuf::from(rest),
            }),
            "usb" => parse_usb(rest).map_err(invalid),
            _ => Err(invalid("unknown kind of printer")),
        }
    }
}

fn parse_network(rest: &str) -> Result<PrinterSpec, &'static str> {
    // The port is after the last colon, so a bracketed IPv6 host keeps its own.
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or("the port is missing (network printers usually listen on 9100)")?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or("an IPv6 address needs closing brackets")?,
        None if host.contains(':') => return Err("an IPv6 address must be in brackets"),
        None => host,
    };
    if host.is_empty() {
        return Err("the host is missing");
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the host contains spaces");
    }
    let port: u16 = port
        .parse()
        .map_err(|_| "the port must be a number from 1 to 65535")?;
    if port == 0 {
        return Err("the port must be a number from 1 to 65535");
    }
    Ok(PrinterSpec::Network {
        host: host.to_string(),
        port,
    })
}

fn parse_usb(rest: &str) -> Result<PrinterSpec, &'static str> {
    const MESSAGE: &str = "vendor and product ids must be 4 hex digits each, like 04b8:0e15";
    let (vendor, product) = rest.split_once(':').ok_or(MESSAGE)?;
    let hex = |s: &str| {
        let s = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(MESSAGE);
        }
        u16::from_str_radix(s, 16).map_err(|_| MESSAGE)
    };
    Ok(PrinterSpec::Usb {
        vendor_id: hex(vendor)?,
        product_id: hex(product)?,
    })
}

impl Serialize for PrinterSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PrinterSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> PrinterSpec {
        match text.parse() {
            Ok(spec) => spec,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    #[test]
    fn every_kind_parses_and_prints_back() {
        for text in [
            "none",
            "network:192.168.1.50:9100",
            "network:printer.local:9100",
            "network:[fe80::1]:9100",
            "file:/dev/usb/lp0",
            "file:/tmp/receipts with space.bin",
            "usb:04b8:0e15",
        ] {
            assert_eq!(parse(text).to_string(), text);
        }
    }

    #[test]
    fn fields_are_what_was_written() {
        assert_eq!(
            parse("network:192.168.1.50:9100"),
            PrinterSpec::Network {
                host: "192.168.1.50".into(),
                port: 9100
            }
        );
        assert_eq!(
            parse("network:[::1]:9100"),
            PrinterSpec::Network {
                host: "::1".into(),
                port: 9100
            }
        );
        assert_eq!(
            parse(" USB:0x04B8:E15 "),
            PrinterSpec::Usb {
                vendor_id: 0x04b8,
                product_id: 0x0e15
            }
        );
        assert_eq!(parse("NONE"), PrinterSpec::None);
        assert!(parse("none").is_none());
    }

    #[test]
    fn bad_specs_say_what_is_allowed() {
        for text in [
            "",
            "lpt1",
            "serial:/dev/ttyS0",
            "network:192.168.1.50",
            "network::9100",
            "network:host:0",
            "network:host:99999",
            "network:host:http",
            "network:fe80::1:9100",
            "network:[fe80::1:9100",
            "network:my printer:9100",
            "file:",
            "usb:04b8",
            "usb:04b8:",
            "usb:xyz:0e15",
            "usb:04b80:0e15",
        ] {
            let err = match text.parse::<PrinterSpec>() {
                Ok(spec) => panic!("{text:?} should be refused, got {spec:?}"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains("printer must be none, network:HOST:PORT, file:PATH or usb:VID:PID"),
                "{err}"
            );
            assert!(err.contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn serde_uses_the_string_form() {
        let spec = parse("usb:04b8:0e15");
        let json = serde_json::to_string(&spec).unwrap_or_default();
        assert_eq!(json, "\"usb:04b8:0e15\"");
        let back: PrinterSpec = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, spec);
        let err = serde_json::from_str::<PrinterSpec>("\"lpt1\"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("printer must be"), "{err}");
    }
}
