//! Which host an `Authentication-Results:` field speaks for: its authserv-id, read by the
//! grammar of RFC 8601 section 2.2, so that removal (section 5) finds every spelling a
//! reader downstream would take for this host's.
//!
//! ```text
//! authres-payload = [CFWS] authserv-id [ CFWS authres-version ] ...
//! authserv-id     = value                    ; RFC 2045: token / quoted-string
//! CFWS            = comments (nested, with quoted-pairs) and folding white space
//! ```

use std::ops::Range;

/// The `Authentication-Results:` fields in the header section at the start of `message`
/// whose authserv-id is `authserv_id` (ASCII case aside): each field's byte range, with its
/// folded lines and its line end. The scan stops at the first empty line.
pub fn forged_fields(message: &[u8], authserv_id: &str) -> Vec<Range<u64>> {
    let mut forged = Vec::new();
    for field in fields(message) {
        if claims(&message[field.clone()], authserv_id) {
            forged.push(field.start as u64..field.end as u64);
        }
    }
    forged
}

/// Where the header section at the start of `message` ends (the index of its empty line),
/// or `None` when `message` holds no empty line at a field's start.
pub fn header_end(message: &[u8]) -> Option<usize> {
    let end = fields(message).last().map_or(0, |field| field.end);
    (end < message.len()).then_some(end)
}

/// The fields of the header section at the start of `message`, each with its folded lines
/// and its line end.
fn fields(message: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let line_end = |from: usize| {
        memchr::memchr(b'\n', &message[from..]).map_or(message.len(), |i| from + i + 1)
    };
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= message.len() || matches!(message[pos], b'\r' | b'\n') {
            return None;
        }
        let start = pos;
        let mut end = line_end(pos);
        while end < message.len() && matches!(message[end], b' ' | b'\t') {
            end = line_end(end);
        }
        pos = end;
        Some(start..end)
    })
}

/// True when `field` is an `Authentication-Results:` field whose authserv-id is
/// `authserv_id`.
fn claims(field: &[u8], authserv_id: &str) -> bool {
    let Some(colon) = memchr::memchr(b':', field) else {
        return false;
    };
    // RFC 5322's obsolete syntax allows white space before the colon; readers take it.
    if !field[..colon]
        .trim_ascii_end()
        .eq_ignore_ascii_case(b"Authentication-Results")
    {
        return false;
    }
    authserv_id_of(&field[colon + 1..])
        .is_some_and(|id| id.trim_ascii().eq_ignore_ascii_case(authserv_id.as_bytes()))
}

/// The authserv-id at the start of a field's value, unquoted, or `None` when the value does
/// not start with one (an unterminated comment or quoted-string, nothing at all).
pub fn authserv_id_of(value: &[u8]) -> Option<Vec<u8>> {
    let at = skip_cfws(value, 0)?;
    match value.get(at)? {
        b'"' => quoted_string(value, at + 1),
        _ => {
            let len = value[at..].iter().take_while(|&&b| is_token(b)).count();
            (len > 0).then(|| value[at..at + len].to_vec())
        }
    }
}

/// The index past comments and white space (folds included) from `at`; `None` when a
/// comment is not closed.
fn skip_cfws(value: &[u8], mut at: usize) -> Option<usize> {
    loop {
        match value.get(at) {
            Some(b' ' | b'\t' | b'\r' | b'\n') => at += 1,
            Some(b'(') => at = skip_comment(value, at + 1)?,
            _ => return Some(at),
        }
    }
}

/// The index past the comment whose `(` was just before `at`: comments nest, and a
/// quoted-pair (`\)`, `\(`, `\\`) is one character of it.
fn skip_comment(value: &[u8], mut at: usize) -> Option<usize> {
    let mut depth = 1usize;
    while depth > 0 {
        match value.get(at)? {
            b'\\' => at += 1,
            b'(' => depth += 1,
            b')' => depth -= 1,
            _ => {}
        }
        at += 1;
    }
    Some(at)
}

/// The content of the quoted-string whose `"` was just before `at`, its quoted-pairs
/// unescaped and its folds unfolded.
fn quoted_string(value: &[u8], mut at: usize) -> Option<Vec<u8>> {
    let mut content = Vec::new();
    loop {
        match *value.get(at)? {
            b'"' => return Some(content),
            b'\\' => {
                content.push(*value.get(at + 1)?);
                at += 1;
            }
            b'\r' | b'\n' => {}
            byte => content.push(byte),
        }
        at += 1;
    }
}

/// RFC 2045's token characters: US-ASCII but space, controls and tspecials. Bytes past
/// US-ASCII are taken too (an internationalised name in UTF-8), as a lenient reader would.
fn is_token(byte: u8) -> bool {
    byte > b' ' && byte != 0x7f && !b"()<>@,;:\\\"/[]?=".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(value: &str) -> Option<String> {
        authserv_id_of(value.as_bytes()).map(|id| String::from_utf8(id).unwrap())
    }

    #[test]
    fn the_authserv_id_is_a_token_or_a_quoted_string_after_comments() {
        let cases = [
            (" mx.example; dkim=pass", Some("mx.example")),
            ("mx.example;dkim=pass", Some("mx.example")),
            (" mx.example 1; dkim=pass", Some("mx.example")),
            (" mx.example(c); none", Some("mx.example")),
            (" \"mx.example\"; dkim=pass", Some("mx.example")),
            (" \"mx\\.exa\\\"mple\"; none", Some("mx.exa\"mple")),
            (" \"mx.\r\n example\"; none", Some("mx. example")),
            (" (a comment) mx.example", Some("mx.example")),
            (" (a \\) b) mx.example; dkim=pass", Some("mx.example")),
            (" (a (nested (twice)) b) mx.example", Some("mx.example")),
            (" (a \\( b) mx.example", Some("mx.example")),
            (" (\\\\) mx.example", Some("mx.example")),
            (
                "\r\n\t(folded\r\n comment)\r\n mx.example",
                Some("mx.example"),
            ),
            (" mx.example.evil; spf=pass", Some("mx.example.evil")),
            // Not closed: no authserv-id can be read.
            (" (a \\) mx.example; dkim=pass", None),
            (" \"mx.example; dkim=pass", None),
            (" ; dkim=pass", None),
            ("", None),
            ("   ", None),
        ];
        for (value, want) in cases {
            assert_eq!(id(value).as_deref(), want, "{value:?}");
        }
    }

    fn cut(message: &str, id: &str) -> String {
        let mut out = message.as_bytes().to_vec();
        for range in forged_fields(message.as_bytes(), id).into_iter().rev() {
            out.drain(range.start as usize..range.end as usize);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_in_this_hosts_name_are_found_with_their_folded_lines() {
        let message = "Received: from a\r\n\
            Authentication-Results: MX.test;\r\n\tdkim=pass header.d=bank.example\r\n\
            authentication-results : (a comment) mx.test (another); spf=pass\r\n\
            Authentication-Results: \"mx.test\"; dkim=pass\r\n\
            Authentication-Results: (a \\) b) mx.test; dkim=pass\r\n\
            Authentication-Results: other.example; spf=fail\r\n\
            Authentication-Results: mx.test.evil; spf=pass\r\n\
            Authentication-Results: \"mx.test.evil\"; spf=pass\r\n\
            X-Authentication-Results: mx.test; spf=pass\r\n\
            Subject: hi\r\n\
            \r\n\
            Authentication-Results: mx.test; spf=pass\r\n";
        assert_eq!(
            cut(message, "mx.test"),
            "Received: from a\r\n\
             Authentication-Results: other.example; spf=fail\r\n\
             Authentication-Results: mx.test.evil; spf=pass\r\n\
             Authentication-Results: \"mx.test.evil\"; spf=pass\r\n\
             X-Authentication-Results: mx.test; spf=pass\r\n\
             Subject: hi\r\n\
             \r\n\
             Authentication-Results: mx.test; spf=pass\r\n",
            "the body is not the header"
        );
    }

    #[test]
    fn a_message_without_them_or_without_a_header_loses_nothing() {
        for message in [
            "",
            "\r\nbody",
            "Subject: x\r\n\r\n",
            "Subject: x",
            "no colon\n\n",
        ] {
            assert!(
                forged_fields(message.as_bytes(), "mx.test").is_empty(),
                "{message:?}"
            );
        }
        assert_eq!(
            forged_fields(b"Authentication-Results: mx.test", "mx.test").pop(),
            Some(0..31),
            "a last field without its line end"
        );
    }

    #[test]
    fn the_header_section_ends_at_its_empty_line() {
        assert_eq!(header_end(b"A: 1\r\nB: 2\r\n \r\n\r\nbody"), Some(15));
        assert_eq!(header_end(b"\r\nbody"), Some(0));
        assert_eq!(header_end(b"A: 1\nB: 2\n\nbody"), Some(10));
        assert_eq!(header_end(b"A: 1\r\nB: 2\r\n"), None);
        assert_eq!(header_end(b"A: 1\r\nB: 2"), None);
        assert_eq!(header_end(b""), None);
    }
}
