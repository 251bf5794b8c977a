//! What every step of a connection shares: the server's side of it ([`Env`]), and the bound
//! on each of its waits ([`bounded`]).

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use smtp_session::Reply;
use tokio_util::sync::CancellationToken;

use crate::limits::{Counts, Limits};
use crate::observer::Observer;

/// What a connection needs from its server.
pub(crate) struct Env<'a> {
    pub(crate) limits: &'a Limits,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<&'a crate::tls::Tls>,
    pub(crate) shutdown: &'a CancellationToken,
    pub(crate) force: &'a CancellationToken,
    /// With a PROXY header, the per-client limit is applied at the connect stage.
    pub(crate) proxy_ip_limit: Option<&'a Arc<Counts>>,
    /// Whether the handler itself wants the connect hook (it may be subscribed only for
    /// the limit above).
    pub(crate) handler_connect: bool,
    /// Told of every reply, and of a refusal under the per-client limit.
    pub(crate) observer: Option<&'a dyn Observer>,
    /// A connection over a limit at accept: its connect stage is refused with this reply,
    /// so that it ends as every connection does, with its disconnect context.
    pub(crate) refusal: Option<&'a Reply>,
}

/// Runs `fut` to its end, or for `limit` at most once it had to wait: a future that is ready
/// at once (a write into an empty socket buffer) costs no timer.
pub(crate) async fn bounded<F: Future>(fut: F, limit: Duration) -> Option<F::Output> {
    let mut fut = pin!(fut);
    if let Poll::Ready(output) = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Some(output);
    }
    tokio::time::timeout(limit, fut).await.ok()
}
