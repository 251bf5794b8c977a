//! The `data_receiver` target: DATA content through `DataReceiver`, split anywhere, against
//! the reference model.

use smtp_session::data::{DataReceiver, DataStatus};
use smtp_session::BareLineEndings;

use crate::fuzz::Rng;
use crate::reference_unstuff;

pub(crate) const POLICIES: [BareLineEndings; 3] = [
    BareLineEndings::Reject,
    BareLineEndings::Normalize,
    BareLineEndings::Allow,
];

/// What a receiver did with some input.
struct Fed {
    rx: DataReceiver,
    body: Vec<u8>,
    consumed: usize,
    done: bool,
}

fn feed_in_chunks(rx: DataReceiver, mut body: Vec<u8>, input: &[u8], lens: &[usize]) -> Fed {
    let mut rx = rx;
    let mut pos = 0;
    let mut done = false;
    let mut lens = lens.iter().copied().cycle();
    while pos < input.len() {
        let len = lens
            .next()
            .unwrap_or(input.len())
            .clamp(1, input.len() - pos);
        let chunk = &input[pos..pos + len];
        let before = body.len();
        let (n, status) = rx.feed(chunk, &mut body);
        assert!(n <= chunk.len(), "consumed more than given");
        assert!(body.len() >= before, "stored bytes were removed");
        pos += n;
        if status == DataStatus::Done {
            done = true;
            assert!(rx.is_done());
            // A finished receiver takes nothing more.
            assert_eq!(rx.feed(&input[pos..], &mut body), (0, DataStatus::Done));
            break;
        }
        assert_eq!(n, chunk.len(), "NeedMore must consume the whole chunk");
        assert!(!rx.is_done());
    }
    Fed {
        rx,
        body,
        consumed: pos,
        done,
    }
}

/// Feeds the input (after a first control byte) to a [`DataReceiver`] in chunks split at
/// points derived from the data, under each policy, with and without a small size limit,
/// and compares the result with [`reference_unstuff`].
pub fn data_receiver(data: &[u8]) {
    let Some((&ctrl, input)) = data.split_first() else {
        return;
    };
    // `CRLF . CRLF` after anything ends the data, at the latest at its own dot.
    let mut full = input.to_vec();
    full.extend_from_slice(b"\r\n.\r\n");

    let mut rng = Rng::new((u64::from(ctrl) << 32) | input.len() as u64);
    let random: Vec<usize> = (0..64).map(|_| 1 + rng.below(16) as usize).collect();
    // Splits at every line-relevant byte: a chunk ends right after each CR, LF or dot.
    let mut at_specials = Vec::new();
    let mut last = 0;
    for (i, b) in input.iter().enumerate() {
        if matches!(b, b'\r' | b'\n' | b'.') {
            at_specials.push(i + 1 - last);
            last = i + 1;
        }
    }
    at_specials.push(usize::MAX);
    let splits: [&[usize]; 4] = [&[usize::MAX], &[1], &random, &at_specials];
    let small = u64::from(ctrl) % (input.len() as u64 + 2);

    for policy in POLICIES {
        let (full_body, full_consumed, full_bare) =
            reference_unstuff(&full, policy).expect("CRLF.CRLF always ends the data");
        let want = reference_unstuff(input, policy);
        if let Some(want) = &want {
            // The reference scans left to right: the first end wins.
            assert_eq!(want, &(full_body.clone(), full_consumed, full_bare));
        }
        for max in [u64::MAX, small] {
            for lens in splits {
                let rx = DataReceiver::new(policy, max);
                let fed = feed_in_chunks(rx, Vec::new(), input, lens);
                let bounded = |len: usize| len.min(usize::try_from(max).unwrap_or(usize::MAX));
                if max != u64::MAX {
                    assert!(
                        fed.body.capacity() as u64 <= max.max(8),
                        "body capacity {} over the limit {max}",
                        fed.body.capacity()
                    );
                }
                let fed = match &want {
                    Some((body, consumed, bare)) => {
                        assert!(fed.done, "{policy:?} {lens:?}: end of data missed");
                        assert_eq!(fed.consumed, *consumed, "{policy:?} {lens:?}");
                        assert_eq!(fed.rx.saw_bare_line_ending(), *bare, "{policy:?}");
                        assert_eq!(fed.rx.size(), body.len() as u64, "{policy:?}");
                        assert_eq!(fed.rx.exceeded(), body.len() as u64 > max);
                        assert_eq!(fed.body, body[..bounded(body.len())], "{policy:?} {lens:?}");
                        continue;
                    }
                    None => {
                        assert!(!fed.done, "{policy:?} {lens:?}: end of data invented");
                        assert_eq!(fed.consumed, input.len());
                        assert!(fed.body.len() <= bounded(full_body.len()));
                        assert_eq!(fed.body, full_body[..fed.body.len()], "{policy:?}");
                        fed
                    }
                };
                // The rest of the stream arrives: the result is the whole stream's.
                let rest = &full[input.len()..];
                let end = feed_in_chunks(fed.rx, fed.body, rest, lens);
                assert!(end.done, "{policy:?}: CRLF.CRLF did not end the data");
                assert_eq!(input.len() + end.consumed, full_consumed, "{policy:?}");
                assert_eq!(end.rx.saw_bare_line_ending(), full_bare, "{policy:?}");
                assert_eq!(end.rx.size(), full_body.len() as u64, "{policy:?}");
                assert_eq!(end.rx.exceeded(), full_body.len() as u64 > max);
                assert_eq!(
                    end.body,
                    full_body[..bounded(full_body.len())],
                    "{policy:?}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::tests::random_bytes;

    #[test]
    fn data_receiver_over_generated_streams() {
        let mut rng = Rng::new(2);
        for _ in 0..400 {
            let mut data = vec![rng.next() as u8];
            data.extend(random_bytes(&mut rng, b"aa\r\r\n\n..\0", 60));
            data_receiver(&data);
        }
        data_receiver(b"\x07Hello\r\n..x\r\n.\r\nQUIT\r\n");
        data_receiver(b"\x00.\r\n");
        data_receiver(b"");
    }
}
