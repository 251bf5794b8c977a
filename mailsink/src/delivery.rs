//! Where accepted messages go, chosen once at start: the Maildir, a downstream server
//! (`--relay`), or nowhere (`--discard`). The handler applies the checks' edits through it
//! and never branches on the options per message.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use smtp_session::{Decision, Message, Reply};

use crate::check::{Edits, Facts};
pub use crate::maildir::Maildir;
use crate::metrics;
use crate::relay::{Content, Relay, Text};
use crate::store;
pub use crate::store::{store_failed, Spool, Spooler};

/// The delivery of accepted messages.
#[derive(Debug)]
pub enum Delivery {
    /// Into a Maildir, each message streamed into `tmp/` as it arrives, then synced and
    /// renamed into `new/` (or the quarantine folder's).
    Maildir(Arc<Maildir>),
    /// To a downstream server, answering the client with what it answered; each message
    /// streamed into the Maildir's `tmp/` as it arrives, relayed from there, and removed.
    Relay(Arc<Relay>, Arc<Maildir>),
    /// Nowhere: accepted and dropped (`--discard`, for benchmarks).
    Discard,
}

/// How the client is answered for a delivered message.
#[derive(Debug)]
pub enum Answer {
    /// One reply for every recipient the checks did not refuse (250 once stored).
    Same(Reply),
    /// The downstream's answer, one reply per delivered recipient under LMTP.
    Relayed(Decision),
}

/// What became of one message.
#[derive(Debug)]
pub struct Delivered {
    /// The answer to the client.
    pub answer: Answer,
    /// The file it was stored in, if it was.
    pub file: Option<PathBuf>,
    /// True when it was taken (stored, relayed to at least one recipient, or dropped).
    pub taken: bool,
}

impl Delivery {
    /// The Maildir messages are spooled into while they arrive, if any.
    pub fn spool_dir(&self) -> Option<&Arc<Maildir>> {
        match self {
            Delivery::Maildir(maildir) | Delivery::Relay(_, maildir) => Some(maildir),
            Delivery::Discard => None,
        }
    }

    /// The relay, if messages go to one.
    pub fn relay(&self) -> Option<&Arc<Relay>> {
        match self {
            Delivery::Relay(relay, _) => Some(relay),
            Delivery::Maildir(_) | Delivery::Discard => None,
        }
    }

    /// True when messages start with the trace fields of final delivery (a relayed one
    /// gets the relay's `Received:` field instead).
    pub fn writes_trace(&self) -> bool {
        matches!(self, Delivery::Maildir(_))
    }

    /// At MAIL FROM: `452 4.3.1` when the spool's file system has less room than a
    /// message of `max_message_size` needs.
    pub fn refuses_mail(&self, max_message_size: u64) -> Option<Decision> {
        let maildir = self.spool_dir()?;
        match maildir.free_space() {
            Ok(free) if free < store::space_needed(max_message_size) => {
                Some(Decision::Reject(store::insufficient_storage()))
            }
            Ok(_) => None,
            // The store itself will tell.
            Err(err) => {
                eprintln!("mailsink: cannot learn the free space: {err}");
                None
            }
        }
    }

    /// Delivers `message` (its body in `spool`, or in `body` when the session gathered
    /// it) with the checks' `edits` applied; `quarantine` sends it to the quarantine folder.
    pub async fn deliver(
        &self,
        facts: &Facts,
        message: &Message,
        spool: Option<Spool>,
        body: &[u8],
        edits: Edits,
    ) -> Delivered {
        match self {
            Delivery::Maildir(_) => store_spool(spool, edits, false).await,
            // Boxed: the relay's future is some 10 KiB, and inline it would make every
            // message hook's future (moved into a box at each message) that large too.
            Delivery::Relay(relay, _) => {
                Box::pin(relay_message(relay, facts, message, spool, body, edits)).await
            }
            Delivery::Discard => Delivered {
                answer: Answer::Same(stored()),
                file: None,
                taken: true,
            },
        }
    }

    /// Stores `spool` in the Maildir's quarantine folder, with the checks' `edits`
    /// applied (under `--relay`, without trace fields: the relay writes its own). With
    /// `--discard` the message is dropped (and logged as quarantined).
    pub async fn quarantine(&self, spool: Option<Spool>, edits: Edits) -> Delivered {
        match (self, spool) {
            (Delivery::Maildir(_) | Delivery::Relay(..), spool) => {
                store_spool(spool, edits, true).await
            }
            (_, spool) => {
                if let Some(spool) = spool {
                    spool.discard().await;
                }
                Delivered {
                    answer: Answer::Same(stored()),
                    file: None,
                    taken: true,
                }
            }
        }
    }
}

/// `250 2.0.0`: the message is taken.
pub fn stored() -> Reply {
    Reply::new(250, "2.0.0 Message accepted").expect("a valid reply")
}

/// The spool into `new/` (or the quarantine's), with `edits` applied: 250 once durable,
/// `451 4.3.0` if anything failed.
async fn store_spool(spool: Option<Spool>, edits: Edits, quarantine: bool) -> Delivered {
    let failed = |file| Delivered {
        answer: Answer::Same(store::store_failed()),
        file,
        taken: false,
    };
    let Some(mut spool) = spool else {
        return failed(None);
    };
    spool.add_fields(&edits.add_fields);
    spool.remove(edits.remove);
    spool.insert(edits.insert);
    if let Some(sender) = &edits.sender {
        spool.set_sender(sender);
    }
    if let Some(body) = edits.body {
        spool.replace_body(body);
    }
    if quarantine {
        spool.mark_quarantined();
    }
    match spool.deliver().await {
        Ok(path) => Delivered {
            answer: Answer::Same(stored()),
            file: Some(path),
            taken: true,
        },
        Err(err) => {
            eprintln!("mailsink: cannot store a message: {err}");
            failed(None)
        }
    }
}

/// Relays `message` (its body in `spool`, or in `body` when the session gathered it) with
/// the checks' `edits`, timed for the metrics; the spool goes afterwards.
async fn relay_message(
    relay: &Relay,
    facts: &Facts,
    message: &Message,
    spool: Option<Spool>,
    body: &[u8],
    edits: Edits,
) -> Delivered {
    let text = match spool.as_ref().map(Spool::stored) {
        Some(store::Stored::File { path, offset }) => Text::File {
            path,
            offset,
            len: message.size,
        },
        Some(store::Stored::Memory(bytes)) => Text::Memory(bytes),
        None => Text::Memory(body),
    };
    let text = match &edits.body {
        Some(new) => match replaced(text, new, &edits.remove).await {
            Ok(text) => text,
            Err(err) => {
                eprintln!("mailsink: relay: cannot read the header section: {err}");
                discard(spool).await;
                return Delivered {
                    answer: Answer::Same(store::store_failed()),
                    file: None,
                    taken: false,
                };
            }
        },
        None => text,
    };
    // A filter's fields go below the relay's Received: field, with the checks' own.
    let mut fields = edits.add_fields;
    for (_, more) in edits.insert {
        fields.extend_from_slice(&more);
    }
    let content = Content {
        text,
        fields: &fields,
        cuts: &edits.remove,
    };
    let started = Instant::now();
    let relayed = relay
        .deliver(&facts.conn, message, content, &facts.hostname, facts.lmtp)
        .await;
    metrics::relay_duration(relayed.delivered > 0, started.elapsed());
    // The new body's file goes with `edits`, once relayed.
    drop(edits.body);
    discard(spool).await;
    Delivered {
        answer: Answer::Relayed(relayed.decision),
        file: None,
        taken: relayed.delivered > 0,
    }
}

async fn discard(spool: Option<Spool>) {
    if let Some(spool) = spool {
        spool.discard().await;
    }
}

/// The text to relay when a filter replaced the body: the header section of `text` (up to
/// where `new` takes over) without `cuts`, then `new`, read from its file as it goes out.
/// The header section is the one the filters were sent, so it is at most 1 MiB.
async fn replaced(
    text: Text<'_>,
    new: &store::NewBody,
    cuts: &[std::ops::Range<u64>],
) -> std::io::Result<Text<'static>> {
    let after = new.after();
    let head = match text {
        Text::Memory(bytes) => bytes[..(after as usize).min(bytes.len())].to_vec(),
        Text::File { path, offset, .. } => tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut head = vec![0; after as usize];
            std::fs::File::open(path)?.read_exact_at(&mut head, offset)?;
            Ok::<_, std::io::Error>(head)
        })
        .await
        .map_err(std::io::Error::other)??,
        Text::Replaced { head, .. } => head,
    };
    Ok(Text::Replaced {
        head: crate::relay::without(&head, cuts),
        body: new.path().to_path_buf(),
        len: new.len(),
    })
}
