//! `--relay URL`: which downstream server, over which protocol, with which TLS.

use std::fmt;
use std::path::PathBuf;

use url::{Host, Url};

/// How the SMTP leg uses TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// `smtps://`: TLS from the first byte (RFC 8314), certificate verified.
    Implicit,
    /// `?starttls=required`: STARTTLS must be offered and succeed, certificate verified.
    Required,
    /// `?starttls=opportunistic`, the default: STARTTLS when offered, the certificate not
    /// verified (RFC 7435); a failed handshake falls back to plaintext on a new connection.
    Opportunistic,
    /// `?starttls=no`: plaintext.
    No,
}

/// The downstream server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `smtp://HOST[:PORT]` (port 25) or `smtps://HOST[:PORT]` (port 465).
    Smtp {
        /// A name or an address, without brackets.
        host: String,
        port: u16,
        tls: Tls,
    },
    /// `lmtp://HOST:PORT`: plaintext, as LMTP is spoken inside one site.
    Lmtp { host: String, port: u16 },
    /// `lmtp+unix:///PATH`.
    LmtpUnix { path: PathBuf },
}

impl Target {
    /// Parses `--relay`'s argument.
    pub fn parse(text: &str) -> Result<Target, String> {
        let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return Err("user names, passwords and fragments are not supported".into());
        }
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        match url.scheme() {
            "smtp" | "smtps" => {
                let implicit = url.scheme() == "smtps";
                let mut tls = if implicit {
                    Tls::Implicit
                } else {
                    Tls::Opportunistic
                };
                for (key, value) in &query {
                    tls = match (key.as_str(), value.as_str(), implicit) {
                        ("starttls", "required", false) => Tls::Required,
                        ("starttls", "opportunistic", false) => Tls::Opportunistic,
                        ("starttls", "no", false) => Tls::No,
                        ("starttls", _, true) => return Err("smtps:// has no starttls".into()),
                        ("starttls", _, false) => {
                            return Err("starttls is required, opportunistic or no".into())
                        }
                        _ => return Err(format!("unknown setting {key:?}")),
                    };
                }
                let host = host(&url)?;
                let port = url.port().unwrap_or(if implicit { 465 } else { 25 });
                Ok(Target::Smtp { host, port, tls })
            }
            "lmtp" => {
                no_settings(&query)?;
                let host = host(&url)?;
                // RFC 2033: LMTP must not be on port 25, and it has no port of its own.
                let port = url.port().ok_or("lmtp:// needs a port")?;
                Ok(Target::Lmtp { host, port })
            }
            "lmtp+unix" => {
                no_settings(&query)?;
                if url.host().is_some() || url.path().len() < 2 {
                    return Err("expected lmtp+unix:///PATH".into());
                }
                Ok(Target::LmtpUnix {
                    path: PathBuf::from(url.path()),
                })
            }
            other => Err(format!(
                "unknown scheme {other:?}: smtp, smtps, lmtp or lmtp+unix"
            )),
        }
    }
}

fn host(url: &Url) -> Result<String, String> {
    if !matches!(url.path(), "" | "/") {
        return Err("expected no path after the host and port".into());
    }
    match url.host() {
        Some(Host::Domain(name)) if !name.is_empty() => Ok(name.to_string()),
        Some(Host::Ipv4(ip)) => Ok(ip.to_string()),
        Some(Host::Ipv6(ip)) => Ok(ip.to_string()),
        _ => Err("the URL needs a host".into()),
    }
}

fn no_settings(query: &[(String, String)]) -> Result<(), String> {
    match query.first() {
        Some((key, _)) => Err(format!("unknown setting {key:?}")),
        None => Ok(()),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracketed = |host: &str| {
            if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_string()
            }
        };
        match self {
            Target::Smtp { host, port, tls } => {
                let (scheme, tls) = match tls {
                    Tls::Implicit => ("smtps", ""),
                    Tls::Required => ("smtp", "?starttls=required"),
                    Tls::Opportunistic => ("smtp", "?starttls=opportunistic"),
                    Tls::No => ("smtp", "?starttls=no"),
                };
                write!(f, "{scheme}://{}:{port}{tls}", bracketed(host))
            }
            Target::Lmtp { host, port } => write!(f, "lmtp://{}:{port}", bracketed(host)),
            Target::LmtpUnix { path } => write!(f, "lmtp+unix://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(host: &str, port: u16, tls: Tls) -> Target {
        Target::Smtp {
            host: host.into(),
            port,
            tls,
        }
    }

    #[test]
    fn the_forms_and_their_defaults() {
        let cases = [
            (
                "smtp://mx.example",
                smtp("mx.example", 25, Tls::Opportunistic),
            ),
            (
                "smtp://127.0.0.1:2525?starttls=required",
                smtp("127.0.0.1", 2525, Tls::Required),
            ),
            ("smtp://[::1]:26?starttls=no", smtp("::1", 26, Tls::No)),
            ("smtps://mx.example", smtp("mx.example", 465, Tls::Implicit)),
            (
                "lmtp://127.0.0.1:24",
                Target::Lmtp {
                    host: "127.0.0.1".into(),
                    port: 24,
                },
            ),
            (
                "lmtp+unix:///run/dovecot/lmtp",
                Target::LmtpUnix {
                    path: "/run/dovecot/lmtp".into(),
                },
            ),
        ];
        for (text, want) in cases {
            let target = Target::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(target, want, "{text}");
            // What the start-up line shows parses back to the same target.
            assert_eq!(
                Target::parse(&target.to_string()).unwrap(),
                want,
                "{target}"
            );
        }
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            (
                "smtp://mx.example?starttls=maybe",
                "required, opportunistic or no",
            ),
            ("smtps://mx.example?starttls=no", "smtps:// has no starttls"),
            ("smtp://mx.example?tls=no", "unknown setting"),
            ("lmtp://127.0.0.1", "needs a port"),
            ("lmtp+unix://host/path", "lmtp+unix:///PATH"),
            ("smtp://user:pw@mx.example", "passwords"),
            ("smtp://mx.example/path", "no path"),
            ("http://mx.example", "unknown scheme"),
            ("mx.example:25", "unknown scheme"),
        ] {
            let err = Target::parse(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
