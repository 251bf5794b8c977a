//! SASL helpers for the server side of SMTP AUTH (RFC 4954): a strict base64
//! codec (RFC 4648) and decoders for the PLAIN (RFC 4616) and LOGIN
//! (draft-murchison-sasl-login) client responses.
//!
//! Everything here is pure and total: malformed input yields an error value,
//! never a panic.

use std::fmt;

use crate::hooks::AuthRequest;

/// Longest authcid, authzid, password or LOGIN field accepted, in bytes.
///
/// RFC 4616 only obliges servers to accept up to 255 octets; capping there
/// bounds the memory an unauthenticated client can make us hold per field.
const MAX_FIELD_LEN: usize = 255;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Marks bytes outside the alphabet in [`DECODE`].
const INVALID: u8 = 0xFF;

/// Reverse lookup for [`ALPHABET`], built at compile time so decoding needs
/// no branches per character class.
const DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Decode standard-alphabet base64 (RFC 4648 section 4) strictly.
///
/// The input length must be a multiple of four, padding may only appear as
/// one or two trailing `=`, unused trailing bits must be zero (canonical
/// encoding, RFC 4648 section 3.5), and no whitespace or other characters are
/// accepted. Empty input decodes to an empty vector. Returns `None` for any
/// violation.
///
/// The RFC 4954 convention of a lone `=` meaning "empty initial response" is
/// not recognised here; callers handle it before decoding.
pub fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let mut quads = input.chunks_exact(4).peekable();
    while let Some(quad) = quads.next() {
        let is_last = quads.peek().is_none();
        let &[a, b, c, d] = quad else {
            // chunks_exact(4) only yields 4-byte slices; this arm is dead.
            return None;
        };
        let (a, b) = (sextet(a)?, sextet(b)?);
        match (c, d) {
            (b'=', b'=') if is_last => {
                // Only the top 2 bits of `b` are used; the rest must be zero
                // or two different strings would decode to the same bytes.
                if b & 0x0F != 0 {
                    return None;
                }
                out.push(a << 2 | b >> 4);
            }
            (c, b'=') if is_last => {
                let c = sextet(c)?;
                if c & 0x03 != 0 {
                    return None;
                }
                out.push(a << 2 | b >> 4);
                out.push(b << 4 | c >> 2);
            }
            (c, d) => {
                // `sextet` rejects `=`, which catches padding in the middle.
                let (c, d) = (sextet(c)?, sextet(d)?);
                out.push(a << 2 | b >> 4);
                out.push(b << 4 | c >> 2);
                out.push(c << 6 | d);
            }
        }
    }
    Some(out)
}

fn sextet(byte: u8) -> Option<u8> {
    // A u8 index into a 256-entry table is always in bounds.
    match DECODE[usize::from(byte)] {
        INVALID => None,
        v => Some(v),
    }
}

/// Encode bytes as standard-alphabet base64 with `=` padding (RFC 4648
/// section 4).
pub fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    // Masking with 0x3F keeps every index below 64, so indexing cannot fail.
    let sym = |v: u32| char::from(ALPHABET[(v & 0x3F) as usize]);
    for chunk in input.chunks(3) {
        let b0 = u32::from(chunk.first().copied().unwrap_or(0));
        let b1 = u32::from(chunk.get(1).copied().unwrap_or(0));
        let b2 = u32::from(chunk.get(2).copied().unwrap_or(0));
        let n = b0 << 16 | b1 << 8 | b2;
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

/// Decoded RFC 4616 PLAIN message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlainCredentials {
    /// Authorization identity: the identity to act as. Empty when the client
    /// wants to act as `authcid` itself.
    pub authzid: String,
    /// Authentication identity: whose password is being presented.
    pub authcid: String,
    /// The password, exactly as sent (no normalisation applied).
    pub password: String,
}

/// Why a SASL client response was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslError {
    /// The response was not strict, canonical base64.
    BadBase64,
    /// The base64 was fine but the decoded message is not a valid response
    /// for the mechanism (wrong structure, bad UTF-8, empty or overlong field).
    Malformed,
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SaslError::BadBase64 => "SASL response is not valid base64",
            SaslError::Malformed => "malformed SASL response",
        })
    }
}

impl std::error::Error for SaslError {}

/// Parse the base64 PLAIN response `[authzid] NUL authcid NUL passwd`.
///
/// Each part must be valid UTF-8 of at most 255 bytes; `authcid` and the
/// password must be non-empty, and the message must contain exactly two NULs.
/// An empty `authzid` is returned as an empty string.
pub fn decode_plain(b64: &[u8]) -> Result<PlainCredentials, SaslError> {
    let raw = base64_decode(b64).ok_or(SaslError::BadBase64)?;
    // splitn(3) leaves any further NUL inside the password, where field()
    // rejects it, so "exactly two NULs" needs no separate count.
    let mut parts = raw.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok(PlainCredentials {
        authzid: field(authzid)?,
        authcid: field(authcid)?,
        password: field(password)?,
    })
}

/// Decode one base64 line of a LOGIN exchange (username or password).
///
/// The decoded value must be valid UTF-8, contain no NUL and be at most 255
/// bytes. An empty value is accepted; whether it can authenticate is the
/// caller's decision.
pub fn decode_login_field(b64: &[u8]) -> Result<String, SaslError> {
    let raw = base64_decode(b64).ok_or(SaslError::BadBase64)?;
    field(&raw)
}

fn field(bytes: &[u8]) -> Result<String, SaslError> {
    if bytes.len() > MAX_FIELD_LEN || memchr::memchr(0, bytes).is_some() {
        return Err(SaslError::Malformed);
    }
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| SaslError::Malformed)
}

/// Where an AUTH exchange is while the server waits for the client's next line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Exchange {
    Plain,
    LoginUsername,
    LoginPassword {
        username: String,
    },
    /// A mechanism the caller runs through the auth hook.
    Step {
        mechanism: String,
        step: u32,
        /// Named by the runtime at an earlier step.
        username: Option<String>,
    },
}

/// What the server does next in an AUTH exchange.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AuthStep {
    /// Send `334 challenge` and read the client's next line for `Exchange`.
    Prompt(Exchange, String),
    /// Ask the auth hook.
    Verify(Verify),
    /// The exchange ends unsuccessfully.
    Refuse(Refusal),
}

/// A request for the auth hook, with what the session remembers of it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Verify {
    pub request: AuthRequest,
    /// The user the credentials name, when the mechanism names one.
    pub username: Option<String>,
    pub step: u32,
}

/// Why an AUTH exchange ended without asking the hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The client sent `*`.
    Cancelled,
    /// A response that was not valid for the mechanism.
    Bad(SaslError),
}

/// The first step of `AUTH mechanism [initial-response]`, for a mechanism offered.
pub(crate) fn start(mechanism: String, initial: Option<&str>) -> AuthStep {
    // RFC 4954: "=" is an empty initial response.
    let initial = initial.map(|s| if s == "=" { "" } else { s });
    match (mechanism.as_str(), initial) {
        ("PLAIN", None) => AuthStep::Prompt(Exchange::Plain, String::new()),
        ("PLAIN", Some(response)) => plain(response.as_bytes()),
        ("LOGIN", None) => AuthStep::Prompt(Exchange::LoginUsername, "VXNlcm5hbWU6".into()),
        ("LOGIN", Some(response)) => login_username(response.as_bytes()),
        (_, None) => hook_step(mechanism, Vec::new(), 0, None),
        (_, Some(response)) => match base64_decode(response.as_bytes()) {
            Some(bytes) => hook_step(mechanism, bytes, 0, None),
            None => AuthStep::Refuse(Refusal::Bad(SaslError::BadBase64)),
        },
    }
}

/// The step after the client's line in `exchange`.
pub(crate) fn respond(exchange: Exchange, line: &[u8]) -> AuthStep {
    if line == b"*" {
        return AuthStep::Refuse(Refusal::Cancelled);
    }
    match exchange {
        Exchange::Plain => plain(line),
        Exchange::LoginUsername => login_username(line),
        Exchange::LoginPassword { username } => match decode_login_field(line) {
            Ok(password) => AuthStep::Verify(Verify {
                username: Some(username.clone()),
                request: AuthRequest::Login { username, password },
                step: 0,
            }),
            Err(error) => AuthStep::Refuse(Refusal::Bad(error)),
        },
        Exchange::Step {
            mechanism,
            step,
            username,
        } => match base64_decode(line) {
            Some(response) => hook_step(mechanism, response, step, username),
            None => AuthStep::Refuse(Refusal::Bad(SaslError::BadBase64)),
        },
    }
}

/// The step after the auth hook answered a challenge: the next prompt.
pub(crate) fn challenge(
    mechanism: String,
    step: u32,
    username: Option<String>,
    challenge: &[u8],
) -> AuthStep {
    let next = Exchange::Step {
        mechanism,
        step: step + 1,
        username,
    };
    AuthStep::Prompt(next, base64_encode(challenge))
}

fn plain(response: &[u8]) -> AuthStep {
    match decode_plain(response) {
        Ok(creds) => AuthStep::Verify(Verify {
            username: Some(creds.authcid.clone()),
            request: AuthRequest::Plain {
                authzid: creds.authzid,
                authcid: creds.authcid,
                password: creds.password,
            },
            step: 0,
        }),
        Err(error) => AuthStep::Refuse(Refusal::Bad(error)),
    }
}

fn login_username(response: &[u8]) -> AuthStep {
    match decode_login_field(response) {
        Ok(username) => {
            AuthStep::Prompt(Exchange::LoginPassword { username }, "UGFzc3dvcmQ6".into())
        }
        Err(error) => AuthStep::Refuse(Refusal::Bad(error)),
    }
}

fn hook_step(
    mechanism: String,
    response: Vec<u8>,
    step: u32,
    username: Option<String>,
) -> AuthStep {
    AuthStep::Verify(Verify {
        request: AuthRequest::Step {
            mechanism,
            response,
            step,
        },
        username,
        step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exchanges_step_from_prompt_to_verification() {
        assert_eq!(
            start("LOGIN".into(), None),
            AuthStep::Prompt(Exchange::LoginUsername, "VXNlcm5hbWU6".into())
        );
        let AuthStep::Prompt(next, _) = respond(Exchange::LoginUsername, b"dXNlcg==") else {
            panic!("a password prompt");
        };
        assert_eq!(
            respond(next, b"cGFzcw=="),
            AuthStep::Verify(Verify {
                request: AuthRequest::Login {
                    username: "user".into(),
                    password: "pass".into()
                },
                username: Some("user".into()),
                step: 0,
            })
        );
        assert_eq!(
            respond(Exchange::Plain, b"*"),
            AuthStep::Refuse(Refusal::Cancelled)
        );
        assert_eq!(
            start("XOAUTH2".into(), Some("!!")),
            AuthStep::Refuse(Refusal::Bad(SaslError::BadBase64))
        );
        let AuthStep::Verify(v) = start("XOAUTH2".into(), Some("=")) else {
            panic!("an empty initial response goes to the hook");
        };
        assert_eq!(v.request.mechanism(), "XOAUTH2");
        assert_eq!(
            challenge("XOAUTH2".into(), 0, None, b"more"),
            AuthStep::Prompt(
                Exchange::Step {
                    mechanism: "XOAUTH2".into(),
                    step: 1,
                    username: None
                },
                "bW9yZQ==".into()
            )
        );
    }

    const RFC4648_VECTORS: &[(&str, &str)] = &[
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn rfc4648_vectors_encode() {
        for (plain, enc) in RFC4648_VECTORS {
            assert_eq!(base64_encode(plain.as_bytes()), *enc, "{plain:?}");
        }
    }

    #[test]
    fn rfc4648_vectors_decode() {
        for (plain, enc) in RFC4648_VECTORS {
            assert_eq!(
                base64_decode(enc.as_bytes()).as_deref(),
                Some(plain.as_bytes()),
                "{enc:?}"
            );
        }
    }

    #[test]
    fn full_alphabet_and_high_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        let enc = base64_encode(&all);
        assert!(enc.contains('+') && enc.contains('/'));
        assert_eq!(base64_decode(enc.as_bytes()), Some(all));
        assert_eq!(base64_decode(b"+/+/"), Some(vec![0xfb, 0xff, 0xbf]));
    }

    #[test]
    fn rejects_invalid_characters() {
        for bad in [
            &b"Zm9v YmFy"[..],
            b"Zm9v\r\n",
            b"Zm9-",
            b"Zm9_",
            b"Zm9\0",
            b"Zm9\xff",
            b" Zm9v",
            b"Zm9vYmFy\n",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rejects_bad_padding() {
        for bad in [
            &b"="[..],
            b"==",
            b"===",
            b"====",
            b"Zg",
            b"Zg=",
            b"Zm8",
            b"Z===",
            b"=Zg=",
            b"Zg==Zg==",
            b"Zm8=Zm9v",
            b"Zg=a",
            b"Zm9vY===",
            b"Zm9vYg==\0",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rejects_non_canonical_trailing_bits() {
        // "Zg==" is canonical for "f"; "Zh==" differs only in discarded bits.
        assert_eq!(base64_decode(b"Zh=="), None);
        assert_eq!(base64_decode(b"Zv=="), None);
        // "Zm8=" is canonical for "fo"; "Zm9=" sets a discarded bit.
        assert_eq!(base64_decode(b"Zm9="), None);
        assert_eq!(base64_decode(b"Zm+="), None);
        assert_eq!(base64_decode(b"Zg=="), Some(b"f".to_vec()));
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let enc = base64_encode(&data);
            prop_assert_eq!(enc.len() % 4, 0);
            prop_assert_eq!(base64_decode(enc.as_bytes()), Some(data));
        }

        #[test]
        fn decode_is_injective(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Anything accepted must be the canonical encoding of its output.
            if let Some(decoded) = base64_decode(&input) {
                let reencoded = base64_encode(&decoded);
                prop_assert_eq!(reencoded.as_bytes(), &input[..]);
            }
        }

        #[test]
        fn decoders_never_panic(input in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_plain(&input);
            let _ = decode_login_field(&input);
            let enc = base64_encode(&input);
            let _ = decode_plain(enc.as_bytes());
            let _ = decode_login_field(enc.as_bytes());
        }
    }

    fn plain(raw: &[u8]) -> Result<PlainCredentials, SaslError> {
        decode_plain(base64_encode(raw).as_bytes())
    }

    #[test]
    fn rfc4616_example_without_authzid() {
        assert_eq!(
            plain(b"\0tim\0tanstaaftanstaaf"),
            Ok(PlainCredentials {
                authzid: String::new(),
                authcid: "tim".into(),
                password: "tanstaaftanstaaf".into(),
            })
        );
        // Same message as it appears on the wire.
        assert_eq!(
            decode_plain(b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm").map(|c| c.authcid),
            Ok("tim".into())
        );
    }

    #[test]
    fn rfc4616_example_with_authzid() {
        assert_eq!(
            plain(b"Ursel\0Kurt\0xipj3plmq"),
            Ok(PlainCredentials {
                authzid: "Ursel".into(),
                authcid: "Kurt".into(),
                password: "xipj3plmq".into(),
            })
        );
    }

    #[test]
    fn plain_accepts_utf8_and_255_byte_fields() {
        let long = "é".repeat(127) + "x"; // 255 bytes
        let raw = format!("\0{long}\0{long}");
        let creds = plain(raw.as_bytes()).expect("valid");
        assert_eq!(creds.authcid, long);
        assert_eq!(creds.password, long);
    }

    #[test]
    fn plain_malformed() {
        let long = "x".repeat(256);
        for raw in [
            &b""[..],
            b"tim",
            b"\0timtanstaaf",
            b"tim\0",
            b"\0tim\0pass\0",
            b"\0tim\0pa\0ss",
            b"\0\0tim\0pass",
            b"\0tim\0",
            b"\0\0pass",
            b"\0\0",
            b"\0tim\0\xff\xfe",
            b"\xc3\0tim\0pass",
            b"\0t\xc3\0pass",
        ] {
            assert_eq!(plain(raw), Err(SaslError::Malformed), "{raw:?}");
        }
        for raw in [
            format!("{long}\0tim\0pass"),
            format!("\0{long}\0pass"),
            format!("\0tim\0{long}"),
        ] {
            assert_eq!(plain(raw.as_bytes()), Err(SaslError::Malformed));
        }
    }

    #[test]
    fn plain_bad_base64() {
        assert_eq!(
            decode_plain(b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm="),
            Err(SaslError::BadBase64)
        );
        assert_eq!(decode_plain(b"="), Err(SaslError::BadBase64));
        assert_eq!(decode_plain(b"*"), Err(SaslError::BadBase64));
    }

    #[test]
    fn login_fields() {
        assert_eq!(decode_login_field(b"dGlt"), Ok("tim".into()));
        assert_eq!(decode_login_field(b""), Ok(String::new()));
        assert_eq!(decode_login_field(b"dGlt\r\n"), Err(SaslError::BadBase64));
        let enc = |raw: &[u8]| base64_encode(raw);
        assert_eq!(
            decode_login_field(enc(b"ti\0m").as_bytes()),
            Err(SaslError::Malformed)
        );
        assert_eq!(
            decode_login_field(enc(b"\xff").as_bytes()),
            Err(SaslError::Malformed)
        );
        let max = "y".repeat(255);
        assert_eq!(decode_login_field(enc(max.as_bytes()).as_bytes()), Ok(max));
        assert_eq!(
            decode_login_field(enc(&[b'y'; 256]).as_bytes()),
            Err(SaslError::Malformed)
        );
    }

    #[test]
    fn error_display() {
        assert!(!SaslError::BadBase64.to_string().is_empty());
        assert!(!SaslError::Malformed.to_string().is_empty());
    }
}
