//! The byte-at-a-time reference model of [`DataReceiver`](smtp_session::data::DataReceiver):
//! the fuzz target `data_receiver` and the receiver's tests (`tests/data_receiver.rs`)
//! compare the real receiver with it.

use smtp_session::BareLineEndings;

/// Reads DATA content one byte at a time, the plainest way: the unstuffed body, the number
/// of bytes up to and including the terminating `.CRLF`, and whether a bare CR or LF was
/// seen; `None` when the input holds no end of data. Size limits are not modelled.
pub fn reference_unstuff(input: &[u8], policy: BareLineEndings) -> Option<(Vec<u8>, usize, bool)> {
    let mut body = Vec::new();
    let mut saw_bare = false;
    let mut line_start = true;
    let mut i = 0;
    while let Some(&byte) = input.get(i) {
        if line_start && byte == b'.' {
            if input.get(i + 1..i + 3) == Some(b"\r\n") {
                return Some((body, i + 3, saw_bare));
            }
            // Stuffing dot: drop it; what follows is no longer a line start.
            line_start = false;
            i += 1;
            continue;
        }
        line_start = false;
        if byte == b'\r' && input.get(i + 1) == Some(&b'\n') {
            body.extend_from_slice(b"\r\n");
            line_start = true;
            i += 2;
        } else if byte == b'\r' || byte == b'\n' {
            saw_bare = true;
            if policy == BareLineEndings::Normalize {
                body.extend_from_slice(b"\r\n");
            } else {
                body.push(byte);
            }
            i += 1;
        } else {
            body.push(byte);
            i += 1;
        }
    }
    None
}
