//! The DATA receiver against the byte-at-a-time reference model of the test kit: the end
//! of data, dot-stuffing, SMTP smuggling sequences and bare line endings under each policy,
//! chunks split anywhere, and the size limit.

use proptest::prelude::*;
use smtp_session::data::{DataReceiver, DataStatus};
use smtp_session::BareLineEndings;
use smtp_session_testkit::reference_unstuff;

const POLICIES: [BareLineEndings; 3] = [
    BareLineEndings::Reject,
    BareLineEndings::Normalize,
    BareLineEndings::Allow,
];

/// Everything observable after feeding some input.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    body: Vec<u8>,
    consumed: usize,
    done: bool,
    saw_bare: bool,
    size: u64,
    exceeded: bool,
}

/// Feeds `input` in chunks of the given lengths (the rest in one last chunk),
/// checking the per-call contract on the way.
fn feed_chunks(
    input: &[u8],
    chunk_lens: &[usize],
    policy: BareLineEndings,
    max_size: u64,
) -> Outcome {
    let mut rx = DataReceiver::new(policy, max_size);
    let mut body = Vec::new();
    let mut pos = 0;
    let mut done = false;
    let mut lens = chunk_lens.iter().copied();
    while pos < input.len() {
        let len = lens
            .next()
            .unwrap_or(input.len() - pos)
            .min(input.len() - pos);
        let chunk = &input[pos..pos + len];
        let (n, status) = rx.feed(chunk, &mut body);
        assert!(n <= chunk.len());
        pos += n;
        if status == DataStatus::Done {
            done = true;
            break;
        }
        assert_eq!(n, chunk.len(), "NeedMore must consume the whole chunk");
    }
    assert_eq!(done, rx.is_done());
    if done {
        assert_eq!(rx.feed(b".\r\n", &mut body), (0, DataStatus::Done));
    }
    Outcome {
        body,
        consumed: pos,
        done,
        saw_bare: rx.saw_bare_line_ending(),
        size: rx.size(),
        exceeded: rx.exceeded(),
    }
}

fn whole(input: &[u8], policy: BareLineEndings) -> Outcome {
    feed_chunks(input, &[], policy, u64::MAX)
}

fn byte_by_byte(input: &[u8], policy: BareLineEndings, max_size: u64) -> Outcome {
    feed_chunks(input, &vec![1; input.len()], policy, max_size)
}

/// What the receiver must report, derived from the reference model.
fn expected(input: &[u8], policy: BareLineEndings, max_size: u64) -> Outcome {
    let (body, consumed, saw_bare) = reference_unstuff(input, policy).expect("terminated");
    let size = body.len() as u64;
    let stored = body
        .len()
        .min(usize::try_from(max_size).unwrap_or(usize::MAX));
    Outcome {
        body: body[..stored].to_vec(),
        consumed,
        done: true,
        saw_bare,
        size,
        exceeded: size > max_size,
    }
}

/// Checks one input under every policy, whole and byte by byte.
fn check(input: &[u8], policy: BareLineEndings, body: &[u8], saw_bare: bool) {
    for out in [whole(input, policy), byte_by_byte(input, policy, u64::MAX)] {
        assert_eq!(
            out.body.escape_ascii().to_string(),
            body.escape_ascii().to_string(),
            "input {:?} policy {policy:?}",
            input.escape_ascii().to_string()
        );
        assert!(out.done);
        assert_eq!(out.consumed, input.len());
        assert_eq!(out.saw_bare, saw_bare);
        assert_eq!(out.size, body.len() as u64);
        assert!(!out.exceeded);
    }
    assert_eq!(
        reference_unstuff(input, policy),
        Some((body.to_vec(), input.len(), saw_bare))
    );
}

fn check_all_policies(input: &[u8], body: &[u8], saw_bare: bool) {
    for policy in POLICIES {
        check(input, policy, body, saw_bare);
    }
}

#[test]
fn dot_first_ends_empty_message() {
    check_all_policies(b".\r\n", b"", false);
}

#[test]
fn terminator_first_crlf_is_stored() {
    check_all_policies(b"Hello\r\n.\r\n", b"Hello\r\n", false);
    check_all_policies(b"a\r\nb\r\n\r\n.\r\n", b"a\r\nb\r\n\r\n", false);
}

#[test]
fn bytes_after_terminator_are_not_consumed() {
    let input = b"Hello\r\n.\r\nMAIL FROM:<a@b>\r\n";
    for policy in POLICIES {
        for out in [whole(input, policy), byte_by_byte(input, policy, u64::MAX)] {
            assert!(out.done);
            assert_eq!(out.consumed, b"Hello\r\n.\r\n".len());
            assert_eq!(out.body, b"Hello\r\n");
        }
    }
    let mut rx = DataReceiver::new(BareLineEndings::Reject, 100);
    let mut body = Vec::new();
    assert_eq!(rx.feed(b".\r\nQUIT\r\n", &mut body), (3, DataStatus::Done));
    assert_eq!(rx.feed(b"QUIT\r\n", &mut body), (0, DataStatus::Done));
    assert!(body.is_empty());
}

#[test]
fn no_terminator_needs_more() {
    for input in [
        &b""[..],
        b"abc",
        b"abc\r\n",
        b"abc\r\n.",
        b"abc\r\n.\r",
        b"\n.\n",
    ] {
        let mut rx = DataReceiver::new(BareLineEndings::Reject, 100);
        let mut body = Vec::new();
        assert_eq!(
            rx.feed(input, &mut body),
            (input.len(), DataStatus::NeedMore)
        );
        assert!(!rx.is_done());
        assert_eq!(reference_unstuff(input, BareLineEndings::Reject), None);
    }
}

/// Sequence, body under Reject/Allow, body under Normalize, bare seen.
type SmugglingCase = (&'static [u8], &'static [u8], &'static [u8], bool);

/// Sequences that look like an end of data to some lenient receiver and
/// must not end it here, with the body expected after `"Hi"` under
/// Reject/Allow, then under Normalize, and whether a bare CR or LF is in it.
const SMUGGLING: &[SmugglingCase] = &[
    (b"\n.\n", b"Hi\n.\n", b"Hi\r\n.\r\n", true),
    (b"\n.\r\n", b"Hi\n.\r\n", b"Hi\r\n.\r\n", true),
    (b"\r.\r", b"Hi\r.\r", b"Hi\r\n.\r\n", true),
    (b"\r.\n", b"Hi\r.\n", b"Hi\r\n.\r\n", true),
    (b"\r.\r\n", b"Hi\r.\r\n", b"Hi\r\n.\r\n", true),
    (b"\r\n.\n", b"Hi\r\n\n", b"Hi\r\n\r\n", true),
    (b"\r\n.\r", b"Hi\r\n\r", b"Hi\r\n\r\n", true),
    (b"\r\n.\r\r\n", b"Hi\r\n\r\r\n", b"Hi\r\n\r\n\r\n", true),
    (b"\r\n\0.\r\n", b"Hi\r\n\0.\r\n", b"Hi\r\n\0.\r\n", false),
    (b"\r\n.\0\r\n", b"Hi\r\n\0\r\n", b"Hi\r\n\0\r\n", false),
    (
        b"\r\r\n.\r\r\n",
        b"Hi\r\r\n\r\r\n",
        b"Hi\r\n\r\n\r\n\r\n",
        true,
    ),
];

#[test]
fn smuggling_sequences_do_not_end_data() {
    for &(seq, kept, normalized, bare) in SMUGGLING {
        let mut input = b"Hi".to_vec();
        input.extend_from_slice(seq);
        input.extend_from_slice(b"more\r\n.\r\n");
        for policy in POLICIES {
            let mut body = if policy == BareLineEndings::Normalize {
                normalized.to_vec()
            } else {
                kept.to_vec()
            };
            body.extend_from_slice(b"more\r\n");
            check(&input, policy, &body, bare);

            // With a pipelined command behind it, the count still stops at
            // the real terminator only.
            let mut piped = input.clone();
            piped.extend_from_slice(b"RSET\r\n");
            let out = feed_chunks(&piped, &[], policy, u64::MAX);
            assert_eq!(out.consumed, input.len());
            assert_eq!(out.body, body);
        }
    }
}

#[test]
fn smuggling_sequences_at_message_start() {
    // The DATA command's CRLF counts as the first CRLF of a terminator.
    check(b".\n.\r\n.\r\n", BareLineEndings::Reject, b"\n.\r\n", true);
    check(
        b".\n.\r\n.\r\n",
        BareLineEndings::Normalize,
        b"\r\n.\r\n",
        true,
    );
    check_all_policies(b".\0\r\n.\r\n", b"\0\r\n", false);
    check(b"\n.\r\n.\r\n", BareLineEndings::Reject, b"\n.\r\n", true);
    check(b"\r.\r\n.\r\n", BareLineEndings::Allow, b"\r.\r\n", true);
}

#[test]
fn dot_stuffing_is_removed_at_line_start() {
    check_all_policies(b"..\r\n.\r\n", b".\r\n", false);
    check_all_policies(b".foo\r\n.\r\n", b"foo\r\n", false);
    check_all_policies(b"a\r\n..b\r\n...\r\n.\r\n", b"a\r\n.b\r\n..\r\n", false);
    check_all_policies(b"a.b\r\n.\r\n", b"a.b\r\n", false);
}

#[test]
fn dot_after_bare_line_ending_is_kept() {
    check(
        b"a\n.b\r\n.\r\n",
        BareLineEndings::Reject,
        b"a\n.b\r\n",
        true,
    );
    check(
        b"a\r.b\r\n.\r\n",
        BareLineEndings::Allow,
        b"a\r.b\r\n",
        true,
    );
    check(
        b"a\n.b\r\n.\r\n",
        BareLineEndings::Normalize,
        b"a\r\n.b\r\n",
        true,
    );
    check(
        b"a\r.b\r\n.\r\n",
        BareLineEndings::Normalize,
        b"a\r\n.b\r\n",
        true,
    );
}

#[test]
fn bare_line_endings_per_policy() {
    let input = b"a\rb\nc\r\r\nd\n\r\n.\r\n";
    check(
        input,
        BareLineEndings::Reject,
        b"a\rb\nc\r\r\nd\n\r\n",
        true,
    );
    check(input, BareLineEndings::Allow, b"a\rb\nc\r\r\nd\n\r\n", true);
    check(
        input,
        BareLineEndings::Normalize,
        b"a\r\nb\r\nc\r\n\r\nd\r\n\r\n",
        true,
    );
}

#[test]
fn clean_message_reports_no_bare_line_ending() {
    check_all_policies(b"a\r\n\r\nb\0c\r\n.\r\n", b"a\r\n\r\nb\0c\r\n", false);
}

#[test]
fn cr_at_chunk_end_is_resolved_later() {
    for policy in POLICIES {
        // CR then LF in the next chunk: a real line end, so the dot after it
        // is at a line start and the data ends.
        let out = feed_chunks(b"a\r\n.\r\n", &[2, 1, 3], policy, u64::MAX);
        assert_eq!(out.body, b"a\r\n");
        assert!(out.done && !out.saw_bare);
        // CR then something else: bare, and no line start.
        let out = feed_chunks(b"a\r.\r\n.\r\n", &[2, 1, 3, 3], policy, u64::MAX);
        let body: &[u8] = if policy == BareLineEndings::Normalize {
            b"a\r\n.\r\n"
        } else {
            b"a\r.\r\n"
        };
        assert_eq!(out.body, body);
        assert!(out.done && out.saw_bare);
        // `.` and `.CR` held back at a chunk end.
        let out = feed_chunks(b"a\r\n.\r\n", &[4, 1, 1], policy, u64::MAX);
        assert_eq!(out.body, b"a\r\n");
        assert!(out.done && !out.saw_bare);
        let out = feed_chunks(b"a\r\n.\rb\r\n.\r\n", &[5, 1, 5], policy, u64::MAX);
        assert!(out.done && out.saw_bare);
        assert_eq!(out.consumed, 11);
    }
}

#[test]
fn size_limit_exact_fit_is_not_exceeded() {
    let input = b"Hello\r\n.\r\n";
    let out = feed_chunks(input, &[], BareLineEndings::Reject, 7);
    assert_eq!(out.body, b"Hello\r\n");
    assert_eq!(out.size, 7);
    assert!(!out.exceeded && out.done);
}

#[test]
fn size_limit_keeps_scanning_and_counting() {
    let input = b"Hello\r\nworld\r\n..x\r\n.\r\nNOOP\r\n";
    for max in [0, 1, 6, 7, 8, 13] {
        for out in [
            feed_chunks(input, &[], BareLineEndings::Reject, max),
            byte_by_byte(input, BareLineEndings::Reject, max),
        ] {
            assert_eq!(out.body, &b"Hello\r\nworld\r\n.x\r\n"[..max as usize]);
            assert_eq!(out.size, 18);
            assert!(out.exceeded);
            assert!(out.done);
            assert_eq!(out.consumed, input.len() - 6);
        }
    }
}

#[test]
fn size_counts_normalized_crlf() {
    let out = feed_chunks(b"a\nb\r\n.\r\n", &[], BareLineEndings::Normalize, 5);
    assert_eq!(out.size, 6);
    assert!(out.exceeded);
    assert_eq!(out.body, b"a\r\nb\r");
}

/// Input bytes weighted toward the ones that matter to the state machine.
///
/// Mapping plain bytes through a table keeps generation cheap; `a` comes
/// first so that shrinking turns irrelevant bytes into plain text.
fn data_bytes() -> impl Strategy<Value = Vec<u8>> {
    const ALPHABET: &[u8] = b"aaa\r\r\r\r\n\n\n\n...\0";
    let bytes = proptest::collection::vec(any::<u8>(), 0..300);
    (bytes, any::<bool>()).prop_map(|(raw, piped)| {
        let mut v: Vec<u8> = raw
            .into_iter()
            .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()])
            .collect();
        v.extend_from_slice(b"\r\n.\r\n");
        if piped {
            v.extend_from_slice(b"QUIT\r\n.\r\n");
        }
        v
    })
}

fn policy() -> impl Strategy<Value = BareLineEndings> {
    prop_oneof![
        Just(BareLineEndings::Reject),
        Just(BareLineEndings::Normalize),
        Just(BareLineEndings::Allow),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn matches_reference_whole_and_bytewise(input in data_bytes(), policy in policy()) {
        let want = expected(&input, policy, u64::MAX);
        prop_assert_eq!(whole(&input, policy), expected(&input, policy, u64::MAX));
        prop_assert_eq!(byte_by_byte(&input, policy, u64::MAX), want);
    }

    #[test]
    fn matches_reference_random_splits(
        input in data_bytes(),
        policy in policy(),
        splits in proptest::collection::vec(0usize..8, 0..200),
    ) {
        prop_assert_eq!(
            feed_chunks(&input, &splits, policy, u64::MAX),
            expected(&input, policy, u64::MAX)
        );
    }

    #[test]
    fn matches_reference_with_small_limit(
        input in data_bytes(),
        policy in policy(),
        splits in proptest::collection::vec(0usize..8, 0..200),
        max_size in 0u64..64,
    ) {
        let want = expected(&input, policy, max_size);
        prop_assert_eq!(feed_chunks(&input, &splits, policy, max_size), want);
        prop_assert_eq!(
            byte_by_byte(&input, policy, max_size),
            expected(&input, policy, max_size)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..400),
        policy in policy(),
        splits in proptest::collection::vec(0usize..16, 0..100),
        max_size in 0u64..128,
    ) {
        let mut rx = DataReceiver::new(policy, max_size);
        let mut body = Vec::new();
        let mut pos = 0;
        let mut lens = splits.iter().copied();
        while pos < input.len() {
            let len = lens.next().unwrap_or(input.len()).min(input.len() - pos);
            let (n, status) = rx.feed(&input[pos..pos + len], &mut body);
            pos += n;
            if status == DataStatus::Done {
                break;
            }
        }
        prop_assert!(body.len() as u64 <= max_size);
        match reference_unstuff(&input, policy) {
            Some((_, consumed, _)) => prop_assert_eq!((pos, rx.is_done()), (consumed, true)),
            None => prop_assert!(!rx.is_done()),
        }
    }
}
