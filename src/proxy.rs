//! Server-side parser for the HAProxy PROXY protocol, versions 1 (text) and
//! 2 (binary), as specified in HAProxy's `doc/proxy-protocol.txt`.
//!
//! The parser is sans-IO: feed it whatever bytes have arrived so far and it
//! reports whether a complete header is present, more bytes are needed, or the
//! bytes can no longer become a valid header. Because the spec forbids
//! guessing whether a header is present, anything that is not a PROXY header
//! (for example a client that starts talking SMTP) is an error.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// TLV type: Application-Layer Protocol Negotiation value (e.g. `smtp`).
pub const PP2_TYPE_ALPN: u8 = 0x01;
/// TLV type: host name the client asked for (TLS SNI), UTF-8.
pub const PP2_TYPE_AUTHORITY: u8 = 0x02;
/// TLV type: CRC32c checksum of the whole header (not verified by this parser).
pub const PP2_TYPE_CRC32C: u8 = 0x03;
/// TLV type: padding, to be ignored.
pub const PP2_TYPE_NOOP: u8 = 0x04;
/// TLV type: opaque connection identifier of up to 128 bytes.
pub const PP2_TYPE_UNIQUE_ID: u8 = 0x05;
/// TLV type: TLS information about the client connection, with sub-TLVs.
pub const PP2_TYPE_SSL: u8 = 0x20;
/// TLV type: name of the network namespace, US-ASCII.
pub const PP2_TYPE_NETNS: u8 = 0x30;

const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 line the spec allows, CRLF included (the `UNKNOWN` worst case).
const V1_MAX_LEN: usize = 107;
/// The shortest v1 line: `PROXY UNKNOWN\r\n`.
const V1_MIN_LEN: usize = 15;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/protocol and the 16-bit length.
const V2_FIXED_LEN: usize = 16;

type Tlvs = Vec<(u8, Vec<u8>)>;

/// A decoded PROXY protocol header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Protocol version the header was sent in: 1 or 2.
    pub version: u8,
    /// Original source address; None for v1 `UNKNOWN`, the v2 LOCAL command,
    /// or AF_UNSPEC/AF_UNIX.
    pub source: Option<SocketAddr>,
    /// Original destination address; None in the same cases as `source`.
    pub destination: Option<SocketAddr>,
    /// v2 TLVs as (type, value) in order; empty for v1.
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

impl ProxyHeader {
    /// Value of the first TLV of type `kind`, if any (see the `PP2_TYPE_*`
    /// constants).
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.as_slice())
    }
}

/// Why the bytes received cannot be a PROXY protocol header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// The header is malformed; the string says which rule was broken.
    Invalid(&'static str),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Invalid(why) => write!(f, "invalid PROXY protocol header: {why}"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Outcome of [`parse_proxy_header`] when the bytes are not (yet) invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyParse {
    /// Everything seen so far is a valid prefix of a header; read at least
    /// `needed` more bytes and call again with the whole buffer. For a v2 header
    /// whose length field arrived, `needed` is exact; otherwise it is a lower
    /// bound (a v1 line ends where its CRLF is).
    Incomplete {
        /// How many more bytes the header takes at least.
        needed: usize,
    },
    /// A complete header was parsed.
    Done {
        /// The decoded header.
        header: ProxyHeader,
        /// Number of bytes of the buffer the header occupies; the bytes after
        /// it belong to the proxied protocol.
        consumed: usize,
    },
}

fn invalid<T>(why: &'static str) -> Result<T, ProxyError> {
    Err(ProxyError::Invalid(why))
}

fn incomplete(needed: usize) -> Result<ProxyParse, ProxyError> {
    Ok(ProxyParse::Incomplete {
        needed: needed.max(1),
    })
}

/// Parse a PROXY header (v1 or v2) at the start of `buf`.
///
/// Returns `Incomplete` while more bytes are needed (with how many at least, so a
/// caller need not parse again before they arrived), but fails as soon as the
/// bytes seen cannot be the prefix of a valid header, so a peer that does not
/// speak the PROXY protocol is rejected on its first bytes. v1 lines are at
/// most 107 bytes including CRLF; v2 headers at most 16 + 65535 bytes. Bytes
/// after the header are never examined.
pub fn parse_proxy_header(buf: &[u8]) -> Result<ProxyParse, ProxyError> {
    match buf.first() {
        None => incomplete(V1_MIN_LEN),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => invalid("not a PROXY protocol header"),
    }
}

/// Whether `buf` and `pattern` agree on their common length.
fn agrees_with(buf: &[u8], pattern: &[u8]) -> bool {
    let n = buf.len().min(pattern.len());
    buf.get(..n) == pattern.get(..n)
}

/// What [`ProxyReader::read`] found.
#[derive(Debug)]
pub(crate) enum ProxyRead {
    /// The header, complete.
    Header(ProxyHeader),
    /// All input was taken and the header is not complete yet.
    NeedMore,
    /// The bytes are not a PROXY header, or one longer than the reader may hold.
    Refused,
}

/// Collects a PROXY header that arrives in pieces, parsing again only once as many bytes as
/// the parser said it still needs have arrived, so a slow sender costs O(n).
#[derive(Debug, Default)]
pub(crate) struct ProxyReader {
    /// The header's bytes so far; empty while the header comes whole in one read.
    held: Vec<u8>,
    /// Bytes the header takes at least, beyond `held`.
    needed: usize,
}

impl ProxyReader {
    /// Takes the header's bytes from `input` and returns how many it took and what it found;
    /// the bytes after a complete header are not taken. A header longer than `max_len`
    /// bytes is refused rather than waited for.
    pub(crate) fn read(&mut self, input: &[u8], max_len: usize) -> (usize, ProxyRead) {
        if !self.held.is_empty() && input.len() < self.needed {
            self.held.extend_from_slice(input);
            self.needed -= input.len();
            return (input.len(), ProxyRead::NeedMore);
        }
        let before = self.held.len();
        let take = input.len().min(max_len.saturating_sub(before));
        let parsed = if before == 0 {
            parse_proxy_header(&input[..take])
        } else {
            self.held.extend_from_slice(&input[..take]);
            parse_proxy_header(&self.held)
        };
        match parsed {
            Ok(ProxyParse::Done { header, consumed }) => {
                self.held = Vec::new();
                (consumed - before, ProxyRead::Header(header))
            }
            Ok(ProxyParse::Incomplete { needed }) if before + take + needed <= max_len => {
                if before == 0 {
                    self.held.extend_from_slice(&input[..take]);
                }
                self.needed = needed;
                (take, ProxyRead::NeedMore)
            }
            Ok(ProxyParse::Incomplete { .. }) | Err(_) => (input.len(), ProxyRead::Refused),
        }
    }
}

// ---------------------------------------------------------------- version 1

fn parse_v1(buf: &[u8]) -> Result<ProxyParse, ProxyError> {
    if !agrees_with(buf, V1_PREFIX) {
        return invalid("not a PROXY protocol header");
    }
    let Some(after_prefix) = buf.get(V1_PREFIX.len()..) else {
        return incomplete(V1_MIN_LEN - buf.len());
    };
    let window = buf.get(..V1_MAX_LEN).unwrap_or(buf);
    let Some(eol) = memchr::memchr2(b'\r', b'\n', window) else {
        if buf.len() >= V1_MAX_LEN {
            return invalid("v1 line has no CRLF within 107 bytes");
        }
        parse_v1_body(after_prefix, false)?;
        return incomplete(V1_MIN_LEN.saturating_sub(buf.len()));
    };
    // The prefix holds no CR or LF, so the body ends at or after its start.
    let body = buf.get(V1_PREFIX.len()..eol).unwrap_or_default();
    if window.get(eol) == Some(&b'\n') {
        return invalid("v1 line ends in a bare LF");
    }
    let consumed = eol + 2;
    if consumed > V1_MAX_LEN {
        return invalid("v1 line longer than 107 bytes");
    }
    match buf.get(eol + 1) {
        // The line can only end here, so judge it as complete now rather
        // than waiting for a LF that would not make it valid.
        None => parse_v1_body(body, true).map(|_| ProxyParse::Incomplete { needed: 1 }),
        Some(b'\n') => match parse_v1_body(body, true)? {
            Some(header) => Ok(ProxyParse::Done { header, consumed }),
            None => invalid("v1 line incomplete"),
        },
        Some(_) => invalid("v1 line has CR without LF"),
    }
}

#[derive(Clone, Copy)]
enum V1Field {
    Addr,
    Port,
}

const V1_FIELDS: [V1Field; 4] = [V1Field::Addr, V1Field::Addr, V1Field::Port, V1Field::Port];

/// Validate the text between `PROXY ` and the CRLF. With `complete` false the
/// body may be cut short anywhere and only has to be a valid prefix; the
/// header is returned only for a complete body.
fn parse_v1_body(body: &[u8], complete: bool) -> Result<Option<ProxyHeader>, ProxyError> {
    let unknown = || ProxyHeader {
        version: 1,
        source: None,
        destination: None,
        tlvs: Vec::new(),
    };
    let (proto, rest) = match memchr::memchr(b' ', body) {
        Some(sp) => (body.get(..sp).unwrap_or_default(), body.get(sp + 1..)),
        None => (body, None),
    };
    let v6 = match (proto, rest) {
        // The spec tells receivers to ignore whatever follows UNKNOWN.
        (b"UNKNOWN", Some(_)) => return Ok(complete.then(unknown)),
        (b"UNKNOWN", None) if complete => return Ok(Some(unknown())),
        (b"TCP4", Some(_)) => false,
        (b"TCP6", Some(_)) => true,
        (_, None) if !complete => {
            return if [&b"TCP4"[..], b"TCP6", b"UNKNOWN"]
                .iter()
                .any(|p| p.starts_with(proto))
            {
                Ok(None)
            } else {
                invalid("v1 protocol is not TCP4, TCP6 or UNKNOWN")
            };
        }
        (b"TCP4" | b"TCP6", None) => return invalid("v1 line ends before the addresses"),
        _ => return invalid("v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    let rest = rest.unwrap_or_default();

    let mut tokens: [&[u8]; 4] = [&[]; 4];
    let mut count = 0;
    for token in rest.split(|&b| b == b' ') {
        let Some(slot) = tokens.get_mut(count) else {
            return invalid("v1 line has too many fields");
        };
        *slot = token;
        count += 1;
    }
    if complete && count < tokens.len() {
        return invalid("v1 line has too few fields");
    }
    for (i, (token, field)) in tokens.iter().zip(V1_FIELDS).take(count).enumerate() {
        // Only the last token seen can still grow.
        let whole = complete || i + 1 < count;
        match field {
            V1Field::Addr if v6 => check_ipv6(token, whole)?,
            V1Field::Addr => check_ipv4(token, whole)?,
            V1Field::Port => check_decimal(token, u16::MAX.into(), whole)
                .then_some(())
                .ok_or(ProxyError::Invalid("v1 port is not a decimal 0-65535"))?,
        }
    }
    if !complete {
        return Ok(None);
    }
    let [src, dst, sport, dport] = tokens;
    let ip = |t: &[u8]| -> Result<IpAddr, ProxyError> {
        let text = std::str::from_utf8(t).map_err(|_| ProxyError::Invalid("v1 address"))?;
        if v6 {
            text.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            text.parse::<Ipv4Addr>().map(IpAddr::V4)
        }
        .map_err(|_| ProxyError::Invalid("v1 address does not match its family"))
    };
    let port = |t: &[u8]| {
        std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or(ProxyError::Invalid("v1 port is not a decimal 0-65535"))
    };
    Ok(Some(ProxyHeader {
        version: 1,
        source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
        destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
        tlvs: Vec::new(),
    }))
}

/// Whether `t` is (a prefix of, unless `complete`) a decimal number in
/// `0..=max` without sign or leading zeros, as the v1 spec requires to avoid
/// octal confusion.
fn check_decimal(t: &[u8], max: u32, complete: bool) -> bool {
    if !t.iter().all(u8::is_ascii_digit) || (complete && t.is_empty()) {
        return false;
    }
    if t.len() > 1 && t.first() == Some(&b'0') {
        return false;
    }
    t.iter()
        .try_fold(0u32, |acc, &d| {
            let v = acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
            (v <= max).then_some(v)
        })
        .is_some()
}

fn check_ipv4(t: &[u8], complete: bool) -> Result<(), ProxyError> {
    let mut octets = 0;
    let mut parts = t.split(|&b| b == b'.').peekable();
    while let Some(part) = parts.next() {
        octets += 1;
        let whole = complete || parts.peek().is_some();
        if octets > 4 || !check_decimal(part, 255, whole) {
            return invalid("v1 IPv4 address is not dotted decimal");
        }
    }
    if complete && octets != 4 {
        return invalid("v1 IPv4 address is not dotted decimal");
    }
    Ok(())
}

/// Cheap necessary conditions for IPv6 text, applied while the token may
/// still grow; the complete token is additionally checked by the standard
/// library's parser.
fn check_ipv6(t: &[u8], complete: bool) -> Result<(), ProxyError> {
    const BAD: &str = "v1 IPv6 address is malformed";
    // 45 = six groups of four hex digits plus a dotted quad.
    if t.len() > 45
        || !t
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return invalid(BAD);
    }
    if memchr::memmem::find(t, b":::").is_some() || memchr::memmem::find_iter(t, b"::").count() > 1
    {
        return invalid(BAD);
    }
    let mut groups = 0;
    let mut parts = t.split(|&b| b == b':').peekable();
    while let Some(part) = parts.next() {
        groups += 1;
        let last = parts.peek().is_none();
        let ok = if part.contains(&b'.') {
            // An embedded IPv4 address may only end the address.
            last && check_ipv4(part, complete).is_ok()
        } else {
            part.len() <= 4
        };
        if !ok || groups > 9 {
            return invalid(BAD);
        }
    }
    if complete {
        let text = std::str::from_utf8(t).map_err(|_| ProxyError::Invalid(BAD))?;
        text.parse::<Ipv6Addr>()
            .map_err(|_| ProxyError::Invalid(BAD))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- version 2

fn parse_v2(buf: &[u8]) -> Result<ProxyParse, ProxyError> {
    if !agrees_with(buf, V2_SIGNATURE) {
        return invalid("not a PROXY protocol header");
    }
    let is_local = match buf.get(12) {
        None => return incomplete(V2_FIXED_LEN - buf.len()),
        Some(&b) if b >> 4 != 2 => return invalid("v2 version is not 2"),
        Some(&b) => match b & 0x0F {
            0 => true,
            1 => false,
            _ => return invalid("v2 command is neither LOCAL nor PROXY"),
        },
    };
    let Some(&fam) = buf.get(13) else {
        return incomplete(V2_FIXED_LEN - buf.len());
    };
    // For PROXY, only the combinations the spec lists as valid; anything else is an
    // unassigned family or protocol, which receivers must reject. LOCAL ignores it.
    let addr_len = match v2_address_len(fam) {
        Some(len) => len,
        None if is_local => 0,
        None => return invalid("v2 address family/protocol is not valid"),
    };
    let Some(&[hi, lo]) = buf.get(14..16) else {
        return incomplete(V2_FIXED_LEN - buf.len());
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = V2_FIXED_LEN + len;
    if is_local {
        return parse_v2_local(buf, fam, total);
    }
    if len < addr_len {
        return invalid("v2 length is shorter than the address block");
    }
    let tlv_start = V2_FIXED_LEN + addr_len;
    // Walk whatever TLV bytes have arrived so that a bad TLV length fails
    // now instead of after up to 64 KiB more input.
    let seen = buf.get(tlv_start..total.min(buf.len())).unwrap_or_default();
    let tlvs = parse_tlvs(seen, total - tlv_start)?;
    let (Some(tlvs), Some(addrs)) = (tlvs, buf.get(V2_FIXED_LEN..tlv_start)) else {
        return incomplete(total - buf.len());
    };
    let (source, destination) = v2_addresses(fam, addrs);
    Ok(ProxyParse::Done {
        header: ProxyHeader {
            version: 2,
            source,
            destination,
            tlvs,
        },
        consumed: total,
    })
}

/// The length of the address block of a valid family/protocol byte.
fn v2_address_len(fam: u8) -> Option<usize> {
    match fam {
        0x00 => Some(0),
        0x11 | 0x12 => Some(12),
        0x21 | 0x22 => Some(36),
        0x31 | 0x32 => Some(216),
        _ => None,
    }
}

/// LOCAL means the proxy itself connected (health checks): the receiver must accept it,
/// use the real endpoints and discard the protocol block, family included (section 2.2).
/// TLVs are kept when the block holds well-formed ones, and dropped when it does not.
fn parse_v2_local(buf: &[u8], fam: u8, total: usize) -> Result<ProxyParse, ProxyError> {
    let Some(block) = buf.get(V2_FIXED_LEN..total) else {
        return incomplete(total - buf.len());
    };
    let tlvs = v2_address_len(fam)
        .and_then(|addr_len| block.get(addr_len..))
        .and_then(|area| parse_tlvs(area, area.len()).ok().flatten())
        .unwrap_or_default();
    let header = ProxyHeader {
        version: 2,
        source: None,
        destination: None,
        tlvs,
    };
    Ok(ProxyParse::Done {
        header,
        consumed: total,
    })
}

/// Decode the address block; `addrs` has exactly the length implied by `fam`.
fn v2_addresses(fam: u8, addrs: &[u8]) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let port = |at: usize| {
        addrs
            .get(at..at + 2)
            .and_then(|p| p.try_into().ok())
            .map(u16::from_be_bytes)
    };
    match fam >> 4 {
        0x1 => {
            let ip = |at: usize| {
                addrs
                    .get(at..at + 4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(|b| IpAddr::from(Ipv4Addr::from(b)))
            };
            let src = ip(0).zip(port(8)).map(SocketAddr::from);
            let dst = ip(4).zip(port(10)).map(SocketAddr::from);
            (src, dst)
        }
        0x2 => {
            let ip = |at: usize| {
                addrs
                    .get(at..at + 16)
                    .and_then(|b| <[u8; 16]>::try_from(b).ok())
                    .map(|b| IpAddr::from(Ipv6Addr::from(b)))
            };
            let src = ip(0).zip(port(32)).map(SocketAddr::from);
            let dst = ip(16).zip(port(34)).map(SocketAddr::from);
            (src, dst)
        }
        // AF_UNSPEC carries nothing usable and AF_UNIX paths do not fit a
        // SocketAddr.
        _ => (None, None),
    }
}

/// Parse the TLVs in `seen`, the first bytes of a TLV area that is `area_len`
/// bytes long in total. Errors as soon as a TLV would cross the end of the
/// area; returns `None` while `seen` is shorter than the area.
fn parse_tlvs(seen: &[u8], area_len: usize) -> Result<Option<Tlvs>, ProxyError> {
    let mut tlvs = Vec::new();
    let mut pos = 0;
    while pos < area_len {
        if area_len - pos < 3 {
            return invalid("v2 TLV header truncated");
        }
        let Some(&[kind, hi, lo]) = seen.get(pos..pos + 3) else {
            return Ok(None);
        };
        let end = pos + 3 + usize::from(u16::from_be_bytes([hi, lo]));
        if end > area_len {
            return invalid("v2 TLV overruns the header length");
        }
        if let Some(value) = seen.get(pos + 3..end) {
            tlvs.push((kind, value.to_vec()));
        }
        pos = end;
    }
    Ok((seen.len() == area_len).then_some(tlvs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(buf: &[u8]) -> Result<ProxyParse, ProxyError> {
        parse_proxy_header(buf)
    }

    fn done(buf: &[u8]) -> (ProxyHeader, usize) {
        match parse(buf) {
            Ok(ProxyParse::Done { header, consumed }) => (header, consumed),
            other => panic!("expected Done for {buf:?}, got {other:?}"),
        }
    }

    fn sa(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("test address"))
    }

    fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(fam);
        let len = u16::try_from(body.len()).expect("test body fits");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        let len = u16::try_from(value.len()).expect("test value fits");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    fn ipv4_block() -> Vec<u8> {
        let mut b = vec![192, 0, 2, 1, 198, 51, 100, 7];
        b.extend_from_slice(&1111u16.to_be_bytes());
        b.extend_from_slice(&25u16.to_be_bytes());
        b
    }

    fn ipv6_block() -> Vec<u8> {
        let mut b = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        b.extend_from_slice(&"2001:db8::25".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&65535u16.to_be_bytes());
        b.extend_from_slice(&587u16.to_be_bytes());
        b
    }

    /// Every strict prefix is Incomplete; the header plus any amount of
    /// trailing data is Done with the header's length.
    fn assert_all_splits(header: &[u8], expected: &ProxyHeader) {
        let mut full = header.to_vec();
        full.extend_from_slice(b"EHLO client.example\r\n");
        for k in 0..header.len() {
            assert!(
                matches!(parse(&full[..k]), Ok(ProxyParse::Incomplete { .. })),
                "prefix of {k} bytes of {header:?}"
            );
        }
        for k in header.len()..=full.len() {
            let (got, consumed) = done(&full[..k]);
            assert_eq!(&got, expected);
            assert_eq!(consumed, header.len());
            assert_eq!(
                &full[consumed..k],
                &b"EHLO client.example\r\n"[..k - consumed]
            );
        }
    }

    #[test]
    fn v1_tcp4() {
        let line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 25\r\n";
        let expected = ProxyHeader {
            version: 1,
            source: sa("1.2.3.4:1111"),
            destination: sa("5.6.7.8:25"),
            tlvs: vec![],
        };
        assert_eq!(done(line), (expected.clone(), line.len()));
        assert_all_splits(line, &expected);
    }

    #[test]
    fn v1_tcp4_extremes() {
        let line = b"PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n";
        let (h, n) = done(line);
        assert_eq!(n, line.len());
        assert_eq!(h.source, sa("255.255.255.255:65535"));
        assert_eq!(h.destination, sa("0.0.0.0:0"));
    }

    #[test]
    fn v1_tcp6() {
        let line = b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.7 65535 587\r\n";
        let expected = ProxyHeader {
            version: 1,
            source: sa("[2001:db8::1]:65535"),
            destination: sa("[::ffff:192.0.2.7]:587"),
            tlvs: vec![],
        };
        assert_all_splits(line, &expected);

        // Longest TCP6 line from the spec, 104 bytes, with upper-case hex.
        let f = "FFFF:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY TCP6 {f} {f} 65535 65535\r\n");
        assert_eq!(line.len(), 104);
        let (h, n) = done(line.as_bytes());
        assert_eq!(n, 104);
        assert_eq!(
            h.source,
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from([0xffff; 8])),
                65535
            ))
        );
    }

    #[test]
    fn v1_unknown() {
        let unknown = ProxyHeader {
            version: 1,
            source: None,
            destination: None,
            tlvs: vec![],
        };
        assert_all_splits(b"PROXY UNKNOWN\r\n", &unknown);
        assert_all_splits(b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1111 25\r\n", &unknown);
        // Whatever follows UNKNOWN is ignored, even if it is not addresses.
        assert_eq!(done(b"PROXY UNKNOWN what ever\r\n").0, unknown);
        // The spec's worst case is exactly 107 bytes and must be accepted.
        let f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY UNKNOWN {f} {f} 65535 65535\r\n");
        assert_eq!(line.len(), 107);
        assert_eq!(done(line.as_bytes()), (unknown, 107));
    }

    #[test]
    fn v1_malformed() {
        let cases: &[&[u8]] = &[
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1111 25\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1111 25\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1111 25\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1111  25\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 25 \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 25 0\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1111\r\n",
            b"PROXY TCP4\r\n",
            b"PROXY TCP4 \r\n",
            b"PROXY \r\n",
            b"PROXY\r\n",
            b"PROXY TCP4 1.2.3.256 5.6.7.8 1111 25\r\n",
            b"PROXY TCP4 1.2.3 5.6.7.8 1111 25\r\n",
            b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1111 25\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1111 25\r\n",
            b"PROXY TCP4 1..3.4 5.6.7.8 1111 25\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1111 25\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1111 25\r\n",
            b"PROXY TCP6 ::1 1::2::3 1111 25\r\n",
            b"PROXY TCP6 ::1 :::1 1111 25\r\n",
            b"PROXY TCP6 ::1 12345::1 1111 25\r\n",
            b"PROXY TCP6 ::1 fe80::1%eth0 1111 25\r\n",
            b"PROXY TCP6 ::1 1:2:3:4:5:6:7 1111 25\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 25\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 99999\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1111 25\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 25\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01111 25\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 25\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 25\r\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 25\rX",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 25\t\r\n",
            b"PROXY UNKNOWN\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1111 25\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1111 25\r\n",
            b"proxy TCP4 1.2.3.4 5.6.7.8 1111 25\r\n",
            b"Proxy TCP4 1.2.3.4 5.6.7.8 1111 25\r\n",
            b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1111 25\r\n",
        ];
        for case in cases {
            assert!(parse(case).is_err(), "{:?}", String::from_utf8_lossy(case));
        }
    }

    #[test]
    fn v1_length_limit() {
        // 105 bytes of body + CRLF would be 108: reject once 107 bytes show no
        // CRLF, without waiting for more.
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(106, b'x');
        assert!(matches!(parse(&line), Ok(ProxyParse::Incomplete { .. })));
        line.push(b'x');
        assert!(parse(&line).is_err());
        // CR as the 107th byte: the LF could only be the 108th.
        line.truncate(106);
        line.push(b'\r');
        assert!(parse(&line).is_err());
        line.push(b'\n');
        assert!(parse(&line).is_err());
        // Missing CRLF after a well-formed TCP4 line is caught early anyway.
        let mut line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 25".to_vec();
        assert!(matches!(parse(&line), Ok(ProxyParse::Incomplete { .. })));
        line.extend_from_slice(b"EHLO x\r\n");
        assert!(parse(&line).is_err());
    }

    #[test]
    fn v1_fails_early() {
        let cases: &[&[u8]] = &[
            b"PROXY X",
            b"PROXY TCP7",
            b"PROXY TCP4 1.2.3.256",
            b"PROXY TCP4 1.2.3.4.",
            b"PROXY TCP4 1.2.3.4 05",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 00",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r",
            b"PROXY TCP6 ::1::",
            b"PROXY TCP6 g",
            b"PROXY TCP6 12345",
            b"PROXY TCP6 ::ffff:1.2.3.4:",
            b"PROXY TCP4 1.2.3.4\r",
        ];
        let ok_prefixes: &[&[u8]] = &[
            b"",
            b"P",
            b"PROXY",
            b"PROXY ",
            b"PROXY TCP",
            b"PROXY UNKNOWN",
            b"PROXY UNKNOWN \xff\x00garbage",
            b"PROXY TCP4 1.2.3.",
            b"PROXY TCP4 1.2.3.4 0",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 0",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 0 ",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 0 2\r",
            b"PROXY TCP6 ::ffff:1.2.",
        ];
        for case in cases {
            assert!(parse(case).is_err(), "{:?}", String::from_utf8_lossy(case));
        }
        for case in ok_prefixes {
            assert!(
                matches!(parse(case), Ok(ProxyParse::Incomplete { .. })),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn smtp_without_header_is_rejected_immediately() {
        assert!(parse(b"EHLO x\r\n").is_err());
        assert!(parse(b"E").is_err());
        assert!(parse(b"HELO x\r\n").is_err());
        assert!(parse(b"QUIT\r\n").is_err());
        assert!(parse(b"\r\nQUIT").is_err());
        assert!(parse(b"\n").is_err());
        assert!(parse(b"PRO\r\n").is_err());
        assert!(parse(b"\x16\x03\x01").is_err()); // TLS ClientHello
    }

    #[test]
    fn v2_ipv4() {
        let hdr = v2(0x21, 0x11, &ipv4_block());
        let expected = ProxyHeader {
            version: 2,
            source: sa("192.0.2.1:1111"),
            destination: sa("198.51.100.7:25"),
            tlvs: vec![],
        };
        assert_eq!(hdr.len(), 28);
        assert_all_splits(&hdr, &expected);
        // UDP is reported the same way; the address block is identical.
        assert_eq!(done(&v2(0x21, 0x12, &ipv4_block())).0, expected);
    }

    #[test]
    fn v2_ipv6() {
        let hdr = v2(0x21, 0x21, &ipv6_block());
        let expected = ProxyHeader {
            version: 2,
            source: sa("[2001:db8::1]:65535"),
            destination: sa("[2001:db8::25]:587"),
            tlvs: vec![],
        };
        assert_eq!(hdr.len(), 52);
        assert_all_splits(&hdr, &expected);
    }

    #[test]
    fn v2_local() {
        let bare = ProxyHeader {
            version: 2,
            source: None,
            destination: None,
            tlvs: vec![],
        };
        assert_all_splits(&v2(0x20, 0x00, &[]), &bare);
        // Addresses present but LOCAL: still skipped, header fully consumed.
        let hdr = v2(0x20, 0x11, &ipv4_block());
        assert_eq!(done(&hdr), (bare.clone(), 28));
        // LOCAL with TLVs (HAProxy health checks may carry some).
        let hdr = v2(0x20, 0x00, &tlv(PP2_TYPE_UNIQUE_ID, b"id-1"));
        let (h, n) = done(&hdr);
        assert_eq!((h.source, h.destination, n), (None, None, hdr.len()));
        assert_eq!(h.tlv(PP2_TYPE_UNIQUE_ID), Some(&b"id-1"[..]));
    }

    #[test]
    fn v2_local_with_a_block_that_is_not_valid_is_accepted_and_its_block_dropped() {
        let bare = ProxyHeader {
            version: 2,
            source: None,
            destination: None,
            tlvs: vec![],
        };
        // A TLV that overruns the block, an unassigned family, a block shorter than the
        // family's addresses: a PROXY command fails on each, a LOCAL one is accepted.
        for (fam, body) in [
            (0x00, vec![PP2_TYPE_NOOP, 0, 9, 1]),
            (0x99, vec![1, 2, 3]),
            (0x21, vec![0; 5]),
        ] {
            assert!(parse(&v2(0x21, fam, &body)).is_err());
            let hdr = v2(0x20, fam, &body);
            assert_eq!(done(&hdr), (bare.clone(), hdr.len()));
            for k in 0..hdr.len() {
                assert!(matches!(
                    parse(&hdr[..k]),
                    Ok(ProxyParse::Incomplete { .. })
                ));
            }
        }
    }

    #[test]
    fn the_reader_takes_exactly_the_header_however_it_is_split() {
        let mut hdr = v2(0x21, 0x11, &ipv4_block());
        hdr.extend(tlv(PP2_TYPE_UNIQUE_ID, b"abc"));
        let len = u16::try_from(hdr.len() - 16).unwrap();
        hdr[14..16].copy_from_slice(&len.to_be_bytes());
        let v1 = b"PROXY TCP4 192.0.2.1 198.51.100.7 1111 25\r\n".to_vec();
        for header in [hdr, v1] {
            let mut wire = header.clone();
            wire.extend_from_slice(b"EHLO x\r\n");
            for piece in 1..=wire.len() {
                let mut reader = ProxyReader::default();
                let mut pos = 0;
                let found = loop {
                    let end = (pos + piece).min(wire.len());
                    let (n, read) = reader.read(&wire[pos..end], 1024);
                    pos += n;
                    match read {
                        ProxyRead::Header(h) => break h,
                        ProxyRead::NeedMore => assert_eq!(pos, end),
                        ProxyRead::Refused => panic!("refused in pieces of {piece}"),
                    }
                };
                assert_eq!(pos, header.len(), "pieces of {piece}");
                assert_eq!(found.source, sa("192.0.2.1:1111"));
            }
        }
    }

    #[test]
    fn the_reader_refuses_a_header_longer_than_it_may_hold() {
        let hdr = v2(0x21, 0x00, &tlv(PP2_TYPE_NOOP, &[0; 2000]));
        let mut reader = ProxyReader::default();
        assert!(matches!(
            reader.read(&hdr[..20], 1024),
            (20, ProxyRead::Refused)
        ));
        let mut reader = ProxyReader::default();
        assert!(matches!(
            reader.read(&hdr[..20], 4096),
            (20, ProxyRead::NeedMore)
        ));
        assert!(matches!(
            reader.read(b"SMTP", 4096),
            (4, ProxyRead::NeedMore)
        ));
        let mut reader = ProxyReader::default();
        assert!(matches!(
            reader.read(b"EHLO x\r\n", 4096).1,
            ProxyRead::Refused
        ));
    }

    #[test]
    fn incomplete_says_how_many_bytes_are_still_needed() {
        let hdr = v2(0x21, 0x11, &ipv4_block());
        for k in 0..hdr.len() {
            let Ok(ProxyParse::Incomplete { needed }) = parse(&hdr[..k]) else {
                panic!("prefix {k}");
            };
            if k == 0 {
                // Which version comes is not known yet: the shorter one bounds it.
                assert_eq!(needed, 15);
                continue;
            }
            let exact = if k < 16 { 16 - k } else { hdr.len() - k };
            assert_eq!(needed, exact, "prefix {k}");
        }
        // v1: at least the shortest line, then at least one byte at a time.
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.7 1111 25\r\n";
        for k in 0..line.len() {
            let Ok(ProxyParse::Incomplete { needed }) = parse(&line[..k]) else {
                panic!("prefix {k}");
            };
            assert!(
                needed >= 1 && k + needed <= line.len(),
                "prefix {k}: {needed}"
            );
        }
    }

    #[test]
    fn v2_unspec_and_unix() {
        let (h, _) = done(&v2(0x21, 0x00, &[]));
        assert_eq!((h.source, h.destination), (None, None));
        let mut body = vec![b'/'; 216];
        body.extend(tlv(PP2_TYPE_NOOP, &[]));
        let hdr = v2(0x21, 0x31, &body);
        let (h, n) = done(&hdr);
        assert_eq!((h.source, h.destination, n), (None, None, 16 + 219));
        assert_eq!(h.tlvs, vec![(PP2_TYPE_NOOP, vec![])]);
        assert!(done(&v2(0x21, 0x32, &[0; 216])).0.source.is_none());
    }

    #[test]
    fn v2_with_tlvs() {
        let mut body = ipv4_block();
        body.extend(tlv(PP2_TYPE_ALPN, b"smtp"));
        body.extend(tlv(PP2_TYPE_NOOP, &[]));
        body.extend(tlv(PP2_TYPE_AUTHORITY, b"mx.example.org"));
        body.extend(tlv(0xE0, &[1, 2, 3]));
        body.extend(tlv(PP2_TYPE_AUTHORITY, b"second"));
        let hdr = v2(0x21, 0x11, &body);
        let expected = ProxyHeader {
            version: 2,
            source: sa("192.0.2.1:1111"),
            destination: sa("198.51.100.7:25"),
            tlvs: vec![
                (PP2_TYPE_ALPN, b"smtp".to_vec()),
                (PP2_TYPE_NOOP, vec![]),
                (PP2_TYPE_AUTHORITY, b"mx.example.org".to_vec()),
                (0xE0, vec![1, 2, 3]),
                (PP2_TYPE_AUTHORITY, b"second".to_vec()),
            ],
        };
        assert_all_splits(&hdr, &expected);
        let (h, _) = done(&hdr);
        assert_eq!(h.tlv(PP2_TYPE_ALPN), Some(&b"smtp"[..]));
        assert_eq!(h.tlv(PP2_TYPE_AUTHORITY), Some(&b"mx.example.org"[..]));
        assert_eq!(h.tlv(PP2_TYPE_NOOP), Some(&[][..]));
        assert_eq!(h.tlv(PP2_TYPE_SSL), None);
    }

    #[test]
    fn v2_maximum_length() {
        let body = tlv(PP2_TYPE_NOOP, &vec![0; 65532]);
        let hdr = v2(0x20, 0x00, &body);
        assert_eq!(hdr.len(), 16 + 65535);
        let (h, n) = done(&hdr);
        assert_eq!(n, 16 + 65535);
        assert_eq!(h.tlvs.len(), 1);
    }

    #[test]
    fn v2_truncated_tlv() {
        // TLV claims 10 bytes but only 4 remain in the declared length.
        let mut body = ipv4_block();
        body.extend_from_slice(&[PP2_TYPE_ALPN, 0, 10, b's', b'm', b't', b'p']);
        let hdr = v2(0x21, 0x11, &body);
        assert!(parse(&hdr).is_err());
        // Detected as soon as the TLV header is visible, not at the end.
        assert!(parse(&hdr[..28 + 3]).is_err());
        assert!(matches!(
            parse(&hdr[..28 + 2]),
            Ok(ProxyParse::Incomplete { .. })
        ));

        // One or two stray bytes after the last TLV cannot form a TLV header;
        // that is known once the preceding TLV's header has arrived.
        for stray in [&[0u8][..], &[0, 0]] {
            let mut body = ipv4_block();
            body.extend(tlv(PP2_TYPE_ALPN, b"smtp"));
            body.extend_from_slice(stray);
            let hdr = v2(0x21, 0x11, &body);
            assert!(parse(&hdr).is_err());
            assert!(matches!(
                parse(&hdr[..30]),
                Ok(ProxyParse::Incomplete { .. })
            ));
            assert!(parse(&hdr[..31]).is_err());
        }
        // Length exactly covering a TLV header but with a non-zero length.
        let mut body = ipv4_block();
        body.extend_from_slice(&[PP2_TYPE_NOOP, 0, 1]);
        assert!(parse(&v2(0x21, 0x11, &body)).is_err());
    }

    #[test]
    fn v2_bad_fixed_fields() {
        for ver_cmd in [0x11, 0x31, 0x01, 0xF1, 0x22, 0x2F] {
            let hdr = v2(ver_cmd, 0x11, &ipv4_block());
            assert!(parse(&hdr).is_err(), "ver_cmd {ver_cmd:#x}");
            // Fails as soon as the byte arrives.
            assert!(parse(&hdr[..13]).is_err(), "ver_cmd {ver_cmd:#x}");
        }
        for fam in [0x01, 0x10, 0x13, 0x41, 0x33, 0xFF] {
            let hdr = v2(0x21, fam, &[0; 216]);
            assert!(parse(&hdr[..14]).is_err(), "fam {fam:#x}");
        }
        // Length shorter than the address block.
        assert!(parse(&v2(0x21, 0x11, &[0; 11])).is_err());
        assert!(parse(&v2(0x21, 0x21, &[0; 12])[..16]).is_err());
        assert!(parse(&v2(0x21, 0x31, &[0; 36])).is_err());
        // LOCAL discards the block whatever it holds (section 2.2).
        assert!(parse(&v2(0x20, 0x31, &[0; 36])).is_ok());
        // Signature mismatch.
        let mut hdr = v2(0x21, 0x11, &ipv4_block());
        hdr[11] = b'X';
        assert!(parse(&hdr).is_err());
        assert!(parse(&hdr[..12]).is_err());
        assert!(matches!(
            parse(&hdr[..11]),
            Ok(ProxyParse::Incomplete { .. })
        ));
    }

    #[test]
    fn error_display() {
        let e = ProxyError::Invalid("why");
        assert!(e.to_string().contains("why"));
    }

    #[test]
    fn random_bytes_never_panic() {
        // Deterministic xorshift so failures reproduce without proptest.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: [&[u8]; 3] = [b"", V2_SIGNATURE, b"PROXY "];
        for _ in 0..20_000 {
            let seed = seeds[(next() % 3) as usize];
            let mut buf = seed.to_vec();
            let extra = (next() % 300) as usize;
            buf.extend((0..extra).map(|_| next() as u8));
            check_invariants(&buf);
        }
    }

    /// Done never claims more than the buffer, and once a prefix is invalid
    /// no extension of it becomes valid.
    fn check_invariants(buf: &[u8]) {
        let mut failed = false;
        for k in 0..=buf.len() {
            match parse(&buf[..k]) {
                Ok(ProxyParse::Done { consumed, .. }) => {
                    assert!(!failed, "Err then Done for {buf:?}");
                    assert!(consumed <= k);
                }
                Ok(ProxyParse::Incomplete { .. }) => {
                    assert!(!failed, "Err then Incomplete for {buf:?}")
                }
                Err(_) => failed = true,
            }
        }
    }

    fn arb_v1() -> impl Strategy<Value = (Vec<u8>, ProxyHeader)> {
        (any::<SocketAddr>(), any::<SocketAddr>(), any::<bool>()).prop_map(|(a, b, six)| {
            let (src, dst) = if six {
                let f = |s: SocketAddr| match s {
                    SocketAddr::V4(v) => SocketAddr::new(v.ip().to_ipv6_mapped().into(), v.port()),
                    SocketAddr::V6(v) => SocketAddr::new((*v.ip()).into(), v.port()),
                };
                (f(a), f(b))
            } else {
                let f = |s: SocketAddr| match s {
                    SocketAddr::V4(v) => SocketAddr::V4(v),
                    SocketAddr::V6(v) => {
                        SocketAddr::new(Ipv4Addr::from(v.ip().to_bits() as u32).into(), v.port())
                    }
                };
                (f(a), f(b))
            };
            let line = format!(
                "PROXY {} {} {} {} {}\r\n",
                if six { "TCP6" } else { "TCP4" },
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            );
            let header = ProxyHeader {
                version: 1,
                source: Some(src),
                destination: Some(dst),
                tlvs: vec![],
            };
            (line.into_bytes(), header)
        })
    }

    fn arb_v2() -> impl Strategy<Value = (Vec<u8>, ProxyHeader)> {
        (
            any::<bool>(),
            any::<SocketAddr>(),
            any::<SocketAddr>(),
            proptest::collection::vec(
                (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)),
                0..5,
            ),
        )
            .prop_map(|(local, a, b, tlvs)| {
                let (fam, mut body, src, dst) = match (a, b) {
                    (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                        let mut body = s.ip().octets().to_vec();
                        body.extend(d.ip().octets());
                        (0x11, body, a, b)
                    }
                    _ => {
                        let v6 = |x: SocketAddr| match x.ip() {
                            IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                            IpAddr::V6(ip) => ip,
                        };
                        let mut body = v6(a).octets().to_vec();
                        body.extend(v6(b).octets());
                        (
                            0x21,
                            body,
                            SocketAddr::new(v6(a).into(), a.port()),
                            SocketAddr::new(v6(b).into(), b.port()),
                        )
                    }
                };
                body.extend(src.port().to_be_bytes());
                body.extend(dst.port().to_be_bytes());
                for (k, v) in &tlvs {
                    body.extend(tlv(*k, v));
                }
                let header = ProxyHeader {
                    version: 2,
                    source: (!local).then_some(src),
                    destination: (!local).then_some(dst),
                    tlvs,
                };
                (v2(if local { 0x20 } else { 0x21 }, fam, &body), header)
            })
    }

    proptest! {
        #[test]
        fn valid_v1_round_trips((line, header) in arb_v1()) {
            assert_all_splits(&line, &header);
        }

        #[test]
        fn valid_v2_round_trips((hdr, header) in arb_v2()) {
            assert_all_splits(&hdr, &header);
        }

        #[test]
        fn mutated_headers_keep_invariants(
            (hdr, _) in prop_oneof![arb_v1(), arb_v2()],
            pos in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut hdr = hdr;
            let i = pos.index(hdr.len());
            hdr[i] = byte;
            hdr.extend_from_slice(b"EHLO x\r\n");
            check_invariants(&hdr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            check_invariants(&buf);
        }
    }
}
