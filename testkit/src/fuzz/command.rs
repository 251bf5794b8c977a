//! The `command_parser` target: one command line through `parse_command`.

use smtp_session::address::is_valid_helo_host;
use smtp_session::command::{parse_command, Command, CommandError};

const VERBS: [&str; 15] = [
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
    "STARTTLS", "AUTH", "XCLIENT",
];

/// The line as [`parse_command`] sees it: one trailing CR, then trailing blanks, removed.
fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let keep = line
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &line[..keep]
}

/// Parses `data` as one command line and checks what the parser promises.
pub fn command_parser(data: &[u8]) {
    let result = parse_command(data);
    let trimmed = trim_line(data);
    let word = &trimmed[..trimmed
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(trimmed.len())];
    let upper = word.to_ascii_uppercase();
    let known = VERBS.iter().any(|v| v.as_bytes() == upper.as_slice());
    match &result {
        Ok(command) => {
            assert_eq!(
                command.verb().as_str().as_bytes(),
                upper.as_slice(),
                "the verb is the line's first word: {data:?}"
            );
            assert!(std::str::from_utf8(trimmed).is_ok(), "Ok for non-UTF-8");
            match command {
                Command::Mail { params, .. } | Command::Rcpt { params, .. } => {
                    assert!(params.is_empty() || params.starts_with(' '), "{params:?}");
                }
                Command::Helo(host) | Command::Ehlo(host) => {
                    assert!(is_valid_helo_host(host), "{host:?}");
                }
                Command::Auth { mechanism, initial } => {
                    assert!((1..=20).contains(&mechanism.len()), "{mechanism:?}");
                    assert!(initial.map_or(true, |i| !i.is_empty() && !i.contains(' ')));
                }
                Command::Vrfy(arg) | Command::Expn(arg) | Command::Xclient(arg) => {
                    assert!(!arg.is_empty() && !arg.starts_with(' '));
                }
                _ => {}
            }
        }
        Err(CommandError::Unknown) => assert!(!known, "known verb reported unknown: {data:?}"),
        Err(CommandError::NotUtf8(verb)) => {
            assert_eq!(verb.as_str().as_bytes(), upper.as_slice());
            assert!(std::str::from_utf8(trimmed).is_err());
        }
        Err(CommandError::Syntax(verb) | CommandError::Address(verb, _)) => {
            assert_eq!(verb.as_str().as_bytes(), upper.as_slice());
        }
        Err(other) => panic!("an error this check does not know: {other:?}"),
    }
    if let Err(error) = &result {
        let _ = error.to_string();
    }

    // Verbs are case-insensitive: flipping the case of the first word changes nothing.
    let mut flipped = data.to_vec();
    for b in &mut flipped[..word.len()] {
        if b.is_ascii_alphabetic() {
            *b ^= 0x20;
        }
    }
    assert_eq!(
        parse_command(&flipped),
        result,
        "verb case matters: {data:?}"
    );

    // A CR or trailing blanks at the end of the line are not content.
    if !data.ends_with(b"\r") {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b" \t");
        assert_eq!(parse_command(&longer), result, "trailing blanks: {data:?}");
        longer.truncate(data.len());
        longer.push(b'\r');
        assert_eq!(parse_command(&longer), result, "trailing CR: {data:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::tests::{any_bytes, random_bytes};
    use crate::fuzz::Rng;

    #[test]
    fn command_parser_over_generated_lines() {
        let mut rng = Rng::new(1);
        let tails: &[&str] = &[
            "",
            " ",
            " client.example",
            " FROM:<a@b.c>",
            " from: <> SIZE=10 BODY=8BITMIME",
            " TO:<\"q u\"@[IPv6:::1]> NOTIFY=NEVER",
            " TO:<@a,@b:c@d>",
            " 12 LAST",
            " 99999999999999999999999",
            " PLAIN AGFsaWNlAHB3",
            " PLAIN =",
            " ADDR=1.2.3.4",
            "\t",
            "\r",
        ];
        for i in 0..600 {
            let mut line = Vec::new();
            let verb = VERBS[rng.below(VERBS.len() as u64) as usize];
            line.extend(verb.bytes().map(|b| {
                if rng.one_in(2) {
                    b.to_ascii_lowercase()
                } else {
                    b
                }
            }));
            line.extend_from_slice(tails[rng.below(tails.len() as u64) as usize].as_bytes());
            if i % 3 == 0 {
                line.extend(random_bytes(
                    &mut rng,
                    b"a<>@:. =\r\n\t\x00\xc3\xa9\xff",
                    12,
                ));
            }
            command_parser(&line);
            command_parser(&any_bytes(&mut rng, 40));
        }
    }
}
