//! Properties: any cut of the filter's bytes gives the same outputs; arbitrary bytes never
//! panic and never hold more memory than the limit; the committed fuzz seeds pass.

use proptest::prelude::*;
use smtp_filter_proto::fuzzing::{milter_outputs, milter_session, policy_outputs, policy_session};

/// A packet of the filter's: length, code, data.
fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut out = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(code);
    out.extend_from_slice(data);
    out
}

/// One segment of the fuzz input format: a little-endian length and the bytes.
fn segment(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_le_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A reply a filter might send to any step, valid or not there.
fn reply() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(packet(b'c', b"")),
        1 => Just(packet(b'a', b"")),
        1 => Just(packet(b'r', b"")),
        1 => Just(packet(b't', b"")),
        1 => Just(packet(b'd', b"")),
        1 => Just(packet(b's', b"")),
        1 => Just(packet(b'p', b"")),
        1 => Just(packet(b'y', b"550 5.7.1 no\0")),
        1 => Just(packet(b'h', b"X-A\0 b\0")),
        1 => Just(packet(b'i', b"\0\0\0\x02X-A\0 b\0")),
        1 => Just(packet(b'm', b"\0\0\0\x01Subject\0\0")),
        1 => Just(packet(b'+', b"<c@example.com>\0")),
        1 => Just(packet(b'b', b"new body\r\n")),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn negotiation() -> impl Strategy<Value = Vec<u8>> {
    (any::<u16>(), any::<u32>()).prop_map(|(actions, protocol)| {
        let mut data = 6u32.to_be_bytes().to_vec();
        data.extend_from_slice(&u32::from(actions & 0x1ff).to_be_bytes());
        data.extend_from_slice(&(protocol & 0x1f_ffff).to_be_bytes());
        packet(b'O', &data)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Filters that mostly follow the protocol: one to three replies per step.
    #[test]
    fn milter_outputs_do_not_depend_on_how_the_bytes_are_cut(
        control in any::<u8>(),
        neg in negotiation(),
        steps in prop::collection::vec(prop::collection::vec(reply(), 1..3), 13),
    ) {
        let mut input = vec![control];
        input.extend(segment(&neg));
        for replies in steps {
            input.extend(segment(&replies.concat()));
        }
        milter_session(&input);
    }

    #[test]
    fn milter_survives_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..600)) {
        milter_session(&data);
    }

    #[test]
    fn policy_outputs_do_not_depend_on_how_the_bytes_are_cut(
        control in any::<u8>(),
        responses in prop::collection::vec(
            prop_oneof![
                Just(b"action=DUNNO\n\n".to_vec()),
                Just(b"action=DEFER_IF_PERMIT Greylisted\r\n\r\n".to_vec()),
                Just(b"x=1\naction=550 5.7.1 no\n\n".to_vec()),
                Just(b"action=PREPEND X-Greylist: delayed\n\n".to_vec()),
                prop::collection::vec(any::<u8>(), 0..40),
            ],
            1..5,
        ),
    ) {
        let mut input = vec![control];
        for r in responses {
            input.extend(segment(&r));
        }
        policy_session(&input);
    }

    #[test]
    fn policy_survives_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..600)) {
        policy_session(&data);
    }
}

/// The committed seed corpora of the fuzz targets.
#[test]
fn committed_corpora_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, run) in [
        ("milter_session", milter_session as fn(&[u8])),
        ("policy_session", policy_session),
    ] {
        let dir = root.join(target);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            run(&std::fs::read(entry.unwrap().path()).unwrap());
            count += 1;
        }
        assert!(count > 0, "no seeds for {target}");
    }
}

/// The main seeds reach what they were written for: the fuzzer starts deep in the protocol.
#[test]
fn the_seeds_reach_end_of_message_and_every_action() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let seed = std::fs::read(root.join("milter_session/all_continue_every_modification")).unwrap();
    let outputs = milter_outputs(&seed);
    let tail: Vec<&str> = outputs
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "Progress",
            "Verdict { step: EndOfMessage, verdict: Accept }",
            "Verdict { step: Unknown, verdict: Continue }",
        ]
    );
    assert_eq!(
        outputs
            .iter()
            .filter(|o| o.starts_with("Modification"))
            .count(),
        9
    );
    let seed = std::fs::read(root.join("policy_session/every_action")).unwrap();
    let outputs = policy_outputs(&seed);
    assert_eq!(outputs.len(), 12);
    assert!(
        outputs.iter().all(|o| o.starts_with("Response")),
        "{outputs:?}"
    );
}
