//! What the workspace's test kit (`testkit/`) needs from the crate's internals, behind the
//! hidden feature `testing`. Not part of the public API: it may change in any release.

use crate::HookId;

impl HookId {
    /// An id the session may never have issued, to check that decisions for it are refused
    /// and change nothing.
    #[doc(hidden)]
    pub fn forged(n: u64) -> HookId {
        HookId(n)
    }
}
