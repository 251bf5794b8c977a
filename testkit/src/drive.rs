//! The one session driver: the loop every runtime in this workspace runs around a [`Session`].
//!
//! A runtime offers the bytes it read and keeps what the session does not take (the
//! backlog) for later; after every input it drains [`Session::poll_output`], carries out
//! each output, and goes on with held input when [`Session::poll_timeout`] has already
//! passed. The transcript harness, the fuzz checkers and the bench runtime differ only in
//! what they do with each output, which they say by implementing [`Runtime`].

use std::time::Instant;

use smtp_session::{Decision, Error, HookId, Output, Session, TlsInfo};

/// Bounds one drain: a session yields a bounded number of outputs per input.
const MAX_OUTPUTS: usize = 100_000;
/// Bounds the resumptions of held input within one drain.
const MAX_RESUMES: usize = 100_000;

/// A runtime as the driver sees it: the session it drives, its clock, its backlog, and what
/// it does with each output. The other methods observe each read; they do nothing unless
/// overridden.
pub trait Runtime {
    /// The session driven.
    fn session(&mut self) -> &mut Session;
    /// The runtime's clock, passed to every call.
    fn now(&self) -> Instant;
    /// Bytes read from the client that the session did not take yet.
    fn backlog(&mut self) -> &mut Vec<u8>;
    /// Carries out one output, in order, and says what the driver does at once.
    fn output(&mut self, output: Output) -> Then;
    /// Called before each [`Session::handle_input`].
    fn reading(&mut self) {}
    /// Called after each [`Session::handle_input`] that took `taken` of `offered` bytes,
    /// before the drain that follows it.
    fn took(&mut self, offered: usize, taken: usize) {
        let _ = (offered, taken);
    }
    /// Called each time [`Session::poll_output`] returns `None`.
    fn drained(&mut self) {}
}

/// What the driver does after an output.
#[derive(Debug)]
#[must_use]
pub enum Then {
    /// Goes on draining.
    Next,
    /// Answers the hook call at once; the session must accept the decision.
    Decide(HookId, Decision),
    /// Reports the requested TLS handshake as established at once.
    Handshake(TlsInfo),
    /// Drops the input read but not taken, as a runtime does that hands its socket to TLS or
    /// closes it.
    DropInput,
}

/// Drains every output, then goes on with held input as long as `poll_timeout` says it is
/// due already.
pub fn drain(rt: &mut impl Runtime) {
    if drain_dropping(rt) {
        rt.backlog().clear();
    }
}

/// Offers `bytes`, read from the client, after the backlog; what the session does not take
/// stays in the backlog.
pub fn feed(rt: &mut impl Runtime, bytes: &[u8]) {
    if rt.backlog().is_empty() {
        // Straight from the read: only what the session leaves is copied.
        let used = offer_bytes(rt, bytes);
        rt.backlog().extend_from_slice(&bytes[used..]);
    } else {
        rt.backlog().extend_from_slice(bytes);
        offer(rt);
    }
}

/// Offers the backlog until the session takes no more.
pub fn offer(rt: &mut impl Runtime) {
    let mut backlog = std::mem::take(rt.backlog());
    let used = offer_bytes(rt, &backlog);
    backlog.drain(..used);
    debug_assert!(
        rt.backlog().is_empty(),
        "the backlog grew while it was offered"
    );
    *rt.backlog() = backlog;
}

/// Calls one of the session's input methods, which must succeed (`what` names it), then
/// drains.
pub fn event(
    rt: &mut impl Runtime,
    what: &str,
    input: impl FnOnce(&mut Session, Instant) -> Result<(), Error>,
) {
    let now = rt.now();
    if let Err(error) = input(rt.session(), now) {
        panic!("{what}: {error}");
    }
    drain(rt);
}

/// Offers `input` until the session takes no more of it, draining after each read. Returns
/// how much of it is used up: taken, or all of it once the runtime drops its input.
fn offer_bytes(rt: &mut impl Runtime, input: &[u8]) -> usize {
    let mut pos = 0;
    // Each round takes at least one byte or ends the loop.
    while pos < input.len() && !rt.session().is_closed() {
        rt.reading();
        let now = rt.now();
        let offered = input.len() - pos;
        let taken = rt
            .session()
            .handle_input(&input[pos..], now)
            .expect("input while open");
        assert!(taken <= offered, "took {taken} of {offered} bytes");
        rt.took(offered, taken);
        pos += taken;
        if drain_dropping(rt) {
            return input.len();
        }
        if taken == 0 {
            break;
        }
    }
    pos
}

/// [`drain`], saying whether the runtime dropped its input.
fn drain_dropping(rt: &mut impl Runtime) -> bool {
    let mut dropped = drain_outputs(rt);
    for _ in 0..MAX_RESUMES {
        let now = rt.now();
        let session = rt.session();
        if session.is_closed() || !session.poll_timeout().is_some_and(|due| due <= now) {
            return dropped;
        }
        session.handle_timeout(now).expect("a timeout while open");
        dropped |= drain_outputs(rt);
    }
    panic!("the session kept resuming without end");
}

fn drain_outputs(rt: &mut impl Runtime) -> bool {
    let mut dropped = false;
    for _ in 0..MAX_OUTPUTS {
        let Some(output) = rt.session().poll_output() else {
            rt.drained();
            return dropped;
        };
        let now = rt.now();
        match rt.output(output) {
            Then::Next => {}
            Then::Decide(id, decision) => {
                if let Err(error) = rt.session().decide(id, decision, now) {
                    panic!("the runtime's decision for {id} was refused: {error}");
                }
            }
            Then::Handshake(tls) => rt
                .session()
                .handle_tls_established(tls, now)
                .expect("a handshake was requested"),
            Then::DropInput => dropped = true,
        }
    }
    panic!("the session produced outputs without end");
}
