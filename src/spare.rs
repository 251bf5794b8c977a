//! Buffers a runtime handed back with [`Session::recycle_hook`](crate::Session::recycle_hook),
//! kept for the next copies the session makes: the strings of the MAIL and RCPT paths (the
//! parser's and the hook calls'), the next message's body, its envelope's list of
//! recipients and its box.
//!
//! With every hook subscribed a pipelining client costs a hook call per command, and each
//! call carries owned copies of what the session also keeps (a path is two `String`s). A
//! runtime that answers at once and gives the call back lets the next copies reuse those
//! strings: the copy stays, the allocator round trip goes. The spares live only while the
//! outputs are drained (like the recycled write buffer) and have fixed bounds, so an idle
//! session holds none.

use crate::address::{Domain, ForwardPath, Mailbox, ReversePath};
use crate::hooks::{Hook, HookCall, Message, Recipient};
use crate::strings::Strings;

/// The most recipients whose list is kept.
const MAX_RECIPIENTS: usize = 1024;

/// What the runtime gave back, for the next copies.
#[derive(Default)]
pub(crate) struct Spares {
    /// Strings of paths, for the parser and the hook copies.
    pub(crate) strings: Strings,
    /// A message body's buffer, empty.
    body: Vec<u8>,
    /// An envelope's list of recipients, empty.
    recipients: Vec<Recipient>,
    /// A message hook's box, its contents left behind.
    message: Option<Box<Message>>,
}

impl Spares {
    /// Keeps the buffers of a finished call, within the bounds; `max_body` is the largest
    /// body buffer worth keeping. Credentials (the auth hook) are never kept.
    pub(crate) fn keep(&mut self, call: HookCall, max_body: usize) {
        match call.hook {
            Hook::Helo { host, .. } => self.keep_string(host),
            Hook::MailFrom {
                path: ReversePath::Mailbox(mailbox),
                ..
            }
            | Hook::RcptTo {
                path: ForwardPath::Mailbox(mailbox),
                ..
            } => self.keep_mailbox(mailbox),
            Hook::Vrfy(string) | Hook::Expn(string) => self.keep_string(string),
            Hook::Message(mut message) => {
                let body = std::mem::take(&mut message.body);
                if body.capacity() <= max_body && body.capacity() > self.body.capacity() {
                    self.body = body;
                    self.body.clear();
                }
                let envelope = &mut message.envelope;
                if let ReversePath::Mailbox(mailbox) =
                    std::mem::replace(&mut envelope.mail_from, ReversePath::Null)
                {
                    self.keep_mailbox(mailbox);
                }
                let mut recipients = std::mem::take(&mut envelope.recipients);
                for recipient in recipients.drain(..) {
                    if let ForwardPath::Mailbox(mailbox) = recipient.path {
                        self.keep_mailbox(mailbox);
                    }
                }
                if recipients.capacity() <= MAX_RECIPIENTS
                    && recipients.capacity() > self.recipients.capacity()
                {
                    self.recipients = recipients;
                }
                self.message = Some(message);
            }
            _ => {}
        }
    }

    /// The domain first: strings are taken back last in, first out, and a path is made
    /// local part first, so each part tends to get a string of its own size.
    #[inline]
    fn keep_mailbox(&mut self, mailbox: Mailbox) {
        if let Domain::Name(name) = mailbox.domain {
            self.keep_string(name);
        }
        self.keep_string(mailbox.local_part);
    }

    #[inline]
    fn keep_string(&mut self, string: String) {
        self.strings.keep(string);
    }

    #[inline]
    fn string(&mut self, from: &str) -> String {
        self.strings.string(from)
    }

    #[inline]
    fn mailbox(&mut self, mailbox: &Mailbox) -> Mailbox {
        Mailbox {
            local_part: self.string(&mailbox.local_part),
            domain: match &mailbox.domain {
                Domain::Name(name) => Domain::Name(self.string(name)),
                literal => literal.clone(),
            },
        }
    }

    /// An empty body buffer of at least `capacity` bytes, if one was kept.
    pub(crate) fn body(&mut self, capacity: usize) -> Option<Vec<u8>> {
        (self.body.capacity() >= capacity).then(|| std::mem::take(&mut self.body))
    }

    /// An empty list for the recipients of a new envelope.
    pub(crate) fn recipients(&mut self) -> Vec<Recipient> {
        std::mem::take(&mut self.recipients)
    }

    /// `message` in the box a runtime gave back, or in a new one.
    pub(crate) fn boxed(&mut self, message: Message) -> Box<Message> {
        match self.message.take() {
            Some(mut boxed) => {
                *boxed = message;
                boxed
            }
            None => Box::new(message),
        }
    }
}

/// A copy of `path` for a hook call, into kept strings when there are any.
pub(crate) fn reverse_path(spares: &mut Option<Box<Spares>>, path: &ReversePath) -> ReversePath {
    match (spares, path) {
        (Some(spares), ReversePath::Mailbox(mailbox)) => {
            ReversePath::Mailbox(spares.mailbox(mailbox))
        }
        _ => path.clone(),
    }
}

/// A copy of `path` for a hook call, into kept strings when there are any.
pub(crate) fn forward_path(spares: &mut Option<Box<Spares>>, path: &ForwardPath) -> ForwardPath {
    match (spares, path) {
        (Some(spares), ForwardPath::Mailbox(mailbox)) => {
            ForwardPath::Mailbox(spares.mailbox(mailbox))
        }
        _ => path.clone(),
    }
}
