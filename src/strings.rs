//! Strings a runtime handed back (see [`spare`](crate::spare)), kept for the next copies the
//! session makes of a path: the parser's and the hook calls'. Apart from the spares, so that
//! the parsers take strings from here without knowing of hook calls.

/// At most this many strings are kept: the paths of a transaction with a few recipients
/// (each path is two), which the parser and the hook copies of the next one reuse.
const MAX_STRINGS: usize = 16;
/// The largest string kept: a whole path fits (RFC 5321 section 4.5.3.1.3, 256 octets).
const MAX_STRING: usize = 256;
/// A new string or a too-small spare is given at least this much, so that a spare fits the
/// local parts and domains that come after it.
const MIN_STRING: usize = 64;

/// Kept strings, last in, first out.
#[derive(Default)]
pub(crate) struct Strings {
    /// `strings[..kept]` are kept strings, the rest empty: in the one allocation of the
    /// spares, which a `Vec` growing to its bound would take several of.
    strings: [String; MAX_STRINGS],
    kept: usize,
}

impl Strings {
    /// Keeps `string`, within the bounds.
    #[inline]
    pub(crate) fn keep(&mut self, string: String) {
        if self.kept < MAX_STRINGS && (1..=MAX_STRING).contains(&string.capacity()) {
            self.strings[self.kept] = string;
            self.kept += 1;
        }
    }

    /// A copy of `from`, in a kept string when there is one.
    #[inline]
    pub(crate) fn string(&mut self, from: &str) -> String {
        let mut string = self.empty(from.len());
        string.push_str(from);
        string
    }

    /// An empty string of at least `capacity`: a kept one when there is one.
    #[inline]
    fn empty(&mut self, capacity: usize) -> String {
        match self.kept.checked_sub(1) {
            Some(last) => {
                self.kept = last;
                let mut string = std::mem::take(&mut self.strings[last]);
                string.clear();
                string.reserve(capacity);
                string
            }
            None => String::with_capacity(capacity.max(MIN_STRING)),
        }
    }
}
