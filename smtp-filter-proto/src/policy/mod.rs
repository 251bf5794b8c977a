//! The client of Postfix's policy delegation protocol (SMTPD_POLICY_README): what postgrey,
//! postfwd, policyd-spf and policyd-rate-limit answer.
//!
//! A request is `name=value` lines and an empty line ([`PolicyRequest`]); the response is
//! the same, with an `action=` attribute ([`PolicyAction`]). One connection carries one
//! request at a time and may be kept for the next.
//!
//! # The run loop
//!
//! [`PolicyClient::request`] queues the request's bytes; drain [`PolicyClient::poll_output`]
//! and write each [`PolicyOutput::Write`] to the service. While
//! [`PolicyClient::awaiting_response`] is true, read from the service (with a timer running),
//! hand the bytes to [`PolicyClient::handle_input`] and drain again, until a
//! [`PolicyOutput::Response`] or a [`PolicyOutput::Failed`]. After a response the
//! connection can carry the next request; after a failure it must be closed.
//!
//! ```
//! use smtp_filter_proto::policy::{PolicyAction, PolicyClient, PolicyOutput, PolicyRequest, ProtocolState};
//!
//! let mut client = PolicyClient::new(4096);
//! let mut request = PolicyRequest::new(ProtocolState::Rcpt);
//! request.client_address = "192.0.2.1".into();
//! request.sender = "a@example.org".into();
//! request.recipient = "b@example.com".into();
//! client.request(&request).unwrap();
//! let Some(PolicyOutput::Write(bytes)) = client.poll_output() else { unreachable!() };
//! assert!(bytes.starts_with(b"request=smtpd_access_policy\nprotocol_state=RCPT\n"));
//! // ... bytes go to the service, its answer comes back:
//! client.handle_input(b"action=DEFER_IF_PERMIT Greylisted\n\n");
//! let Some(PolicyOutput::Response(response)) = client.poll_output() else { unreachable!() };
//! assert!(matches!(response.action, PolicyAction::DeferIfPermit(_)));
//! ```

mod request;
mod response;

use std::collections::VecDeque;

pub use request::{PolicyRequest, ProtocolState};
pub use response::{EnhancedCode, PolicyAction, PolicyResponse, Refusal};

/// What a policy service did wrong. Reported as [`PolicyOutput::Failed`]; the connection is
/// then done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The response grew past the client's limit before its empty line.
    #[error("response longer than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// A line that is not `name=value`.
    #[error("a response line is not name=value")]
    NotAnAttribute,
    /// No `action=` attribute.
    #[error("no action in the response")]
    NoAction,
    /// Two `action=` attributes.
    #[error("two actions in the response")]
    DuplicateAction,
    /// A control character other than tab in the response.
    #[error("control character in the response")]
    ControlCharacter,
    /// A response that is not UTF-8.
    #[error("response not UTF-8")]
    NotUtf8,
    /// An action whose text does not have its shape.
    #[error("bad action: {0}")]
    BadAction(&'static str),
    /// Bytes when no response is owed.
    #[error("bytes from the policy service when no response is owed")]
    Unsolicited,
}

/// A request that cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The named attribute's value has a line break or NUL, which would end the attribute.
    #[error("the {0} attribute has a line break or NUL")]
    LineBreak(String),
    /// An extra attribute's name is empty or has `=`, a line break or NUL.
    #[error("bad attribute name {0:?}")]
    BadName(String),
}

/// Misuse of a [`PolicyClient`]. The call changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A response to the last request is still owed.
    #[error("a response is still owed")]
    AwaitingResponse,
    /// The service broke the protocol earlier ([`PolicyOutput::Failed`]).
    #[error("the policy service failed")]
    Failed,
    /// The request cannot be written.
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// What the caller must act on, drained with [`PolicyClient::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum PolicyOutput {
    /// Bytes the caller MUST send to the service.
    Write(Vec<u8>),
    /// The service's answer to the request.
    Response(PolicyResponse),
    /// The service broke the protocol: the caller MUST close the connection and apply its
    /// default action.
    Failed(PolicyError),
}

/// One connection to a policy service, client side. See the [module docs](self).
#[derive(Debug)]
pub struct PolicyClient {
    max_response: usize,
    buf: Vec<u8>,
    /// Where the line being received starts in `buf`.
    line_start: usize,
    awaiting: bool,
    failed: bool,
    outputs: VecDeque<PolicyOutput>,
}

impl PolicyClient {
    /// A client that accepts responses of at most `max_response` bytes (with their empty
    /// line); that is the most memory it holds for one.
    pub fn new(max_response: usize) -> PolicyClient {
        PolicyClient {
            max_response,
            buf: Vec::new(),
            line_start: 0,
            awaiting: false,
            failed: false,
            outputs: VecDeque::new(),
        }
    }

    /// Queues a request's bytes; a response is owed from then on.
    pub fn request(&mut self, request: &PolicyRequest) -> Result<(), Error> {
        if self.failed {
            return Err(Error::Failed);
        }
        if self.awaiting {
            return Err(Error::AwaitingResponse);
        }
        let bytes = request.encode()?;
        self.outputs.push_back(PolicyOutput::Write(bytes));
        self.awaiting = true;
        Ok(())
    }

    /// Whether a response is owed.
    pub fn awaiting_response(&self) -> bool {
        self.awaiting
    }

    /// Whether the service broke the protocol ([`PolicyOutput::Failed`]).
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The bytes of memory held for a partial response: at most the limit given to
    /// [`PolicyClient::new`].
    pub fn input_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next output, until `None`.
    pub fn poll_output(&mut self) -> Option<PolicyOutput> {
        self.outputs.pop_front()
    }

    /// Bytes from the service.
    pub fn handle_input(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.failed {
            if !self.awaiting {
                return self.fail(PolicyError::Unsolicited);
            }
            let line_end = memchr::memchr(b'\n', bytes);
            let take = line_end.map_or(bytes.len(), |i| i + 1);
            if self.buf.len() + take > self.max_response {
                return self.fail(PolicyError::TooLarge {
                    max: self.max_response,
                });
            }
            let needed = self.buf.len() + take;
            if self.buf.capacity() < needed {
                // Doubling, but never past the limit: the limit is the memory promised.
                let target = (self.buf.capacity() * 2).clamp(needed, self.max_response);
                self.buf.reserve_exact(target - self.buf.len());
            }
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if line_end.is_none() {
                return;
            }
            let line = &self.buf[self.line_start..];
            if matches!(line, b"\n" | b"\r\n") {
                let end = self.line_start;
                let result = PolicyResponse::parse(&self.buf[..end]);
                self.buf.clear();
                self.line_start = 0;
                self.awaiting = false;
                match result {
                    Ok(response) => self.outputs.push_back(PolicyOutput::Response(response)),
                    Err(e) => return self.fail(e),
                }
            } else {
                self.line_start = self.buf.len();
            }
        }
    }

    fn fail(&mut self, error: PolicyError) {
        self.failed = true;
        self.awaiting = false;
        self.outputs.push_back(PolicyOutput::Failed(error));
    }
}
