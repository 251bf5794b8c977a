//! Postfix's XCLIENT command: a trusted proxy or filter passes on the real client's
//! attributes (<https://www.postfix.org/XCLIENT_README.html>).

use std::net::IpAddr;

use crate::context::{AuthInfo, ConnectionInfo, HeloInfo, HeloVerb};
use crate::params::decode_xtext;

/// An attribute value: `None` for `[UNAVAILABLE]` or `[TEMPUNAVAIL]`.
type Value<T> = Option<Option<T>>;

/// The attributes of one XCLIENT command; an attribute not given leaves its field as is.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Attributes {
    addr: Value<IpAddr>,
    port: Value<u16>,
    name: Value<String>,
    helo: Value<String>,
    login: Value<String>,
    proto: Option<HeloVerb>,
    dest_addr: Value<IpAddr>,
    dest_port: Value<u16>,
}

/// Parses `NAME=value` pairs; `None` for an unknown name or a malformed value.
pub(crate) fn parse(args: &str) -> Option<Attributes> {
    let mut attrs = Attributes::default();
    let mut any = false;
    for pair in args.split(' ').filter(|p| !p.is_empty()) {
        let (name, raw) = pair.split_once('=')?;
        let value = decode_xtext(raw)?;
        let value = match value.as_str() {
            "[UNAVAILABLE]" | "[TEMPUNAVAIL]" => None,
            _ => Some(value),
        };
        any = true;
        match name.to_ascii_uppercase().as_str() {
            "ADDR" => attrs.addr = Some(parsed(value, parse_ip)?),
            "PORT" => attrs.port = Some(parsed(value, |v| v.parse().ok())?),
            "NAME" => attrs.name = Some(value),
            "HELO" => attrs.helo = Some(value),
            "LOGIN" => attrs.login = Some(value),
            "PROTO" => {
                attrs.proto = match value?.to_ascii_uppercase().as_str() {
                    "SMTP" => Some(HeloVerb::Helo),
                    "ESMTP" => Some(HeloVerb::Ehlo),
                    _ => return None,
                }
            }
            "DESTADDR" => attrs.dest_addr = Some(parsed(value, parse_ip)?),
            "DESTPORT" => attrs.dest_port = Some(parsed(value, |v| v.parse().ok())?),
            _ => return None,
        }
    }
    any.then_some(attrs)
}

/// `Some(None)` for an unavailable value, `None` when a given value does not parse.
fn parsed<T>(value: Option<String>, parse: impl Fn(&str) -> Option<T>) -> Option<Option<T>> {
    match value {
        Some(v) => parse(&v).map(Some),
        None => Some(None),
    }
}

fn parse_ip(value: &str) -> Option<IpAddr> {
    let value = value
        .strip_prefix("IPV6:")
        .or_else(|| value.strip_prefix("ipv6:"))
        .unwrap_or(value);
    value.parse().ok()
}

impl Attributes {
    /// Replaces what the session knows about the client with the attributes given.
    pub(crate) fn apply(
        self,
        info: &mut ConnectionInfo,
        helo: &mut Option<HeloInfo>,
        auth: &mut Option<AuthInfo>,
    ) {
        if let Some(addr) = self.addr {
            info.remote_ip = addr;
        }
        if let Some(port) = self.port {
            info.remote_port = port;
        }
        if let Some(name) = self.name {
            info.remote_ptr = name;
        }
        if let Some(addr) = self.dest_addr {
            info.local_ip = addr;
        }
        if let Some(port) = self.dest_port {
            info.local_port = port;
        }
        if let Some(login) = self.login {
            *auth = login.map(|username| AuthInfo {
                mechanism: "XCLIENT".into(),
                username: Some(username),
            });
        }
        match self.helo {
            Some(Some(host)) => {
                *helo = Some(HeloInfo {
                    verb: self.proto.unwrap_or(HeloVerb::Ehlo),
                    host,
                })
            }
            Some(None) => *helo = None,
            None => {
                if let (Some(verb), Some(h)) = (self.proto, helo.as_mut()) {
                    h.verb = verb;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postfix_attributes() {
        let a = parse("ADDR=192.0.2.7 PORT=4711 NAME=mail.example.org HELO=mx.example.org PROTO=ESMTP LOGIN=alice").unwrap();
        let mut info = ConnectionInfo::default();
        let (mut helo, mut auth) = (None, None);
        a.apply(&mut info, &mut helo, &mut auth);
        assert_eq!(info.remote_ip, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(info.remote_port, Some(4711));
        assert_eq!(info.remote_ptr.as_deref(), Some("mail.example.org"));
        assert_eq!(helo.unwrap().host, "mx.example.org");
        assert_eq!(auth.unwrap().username.as_deref(), Some("alice"));
    }

    #[test]
    fn unavailable_values_clear_and_ipv6_prefix_is_understood() {
        let a = parse("NAME=[UNAVAILABLE] ADDR=IPV6:2001:db8::1").unwrap();
        let mut info = ConnectionInfo {
            remote_ptr: Some("old".into()),
            ..ConnectionInfo::default()
        };
        a.apply(&mut info, &mut None, &mut None);
        assert_eq!(info.remote_ptr, None);
        assert_eq!(info.remote_ip, Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn unknown_or_malformed_attributes_are_refused() {
        for bad in [
            "",
            "FOO=1",
            "ADDR=300.1.1.1",
            "PORT=x",
            "PROTO=LMTP",
            "ADDR",
            "NAME=a+zz",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
