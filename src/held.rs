//! Input the session took but could not act on yet: a hook is pending, the greeting is held
//! back, or the outputs are full.
//!
//! A pipelining client can send hundreds of commands in one read, and with hooks the
//! session goes on with them one decision at a time. Taking each command off the front of a
//! `Vec` would move everything behind it: quadratic in the commands held. `HeldInput`
//! keeps a read position instead and moves the unread bytes to the front only when new
//! input is appended.

/// Bytes held for later, with the position up to which they were used.
#[derive(Debug, Default)]
pub(crate) struct HeldInput {
    buf: Vec<u8>,
    /// `buf[..start]` is used; `buf[start..]` is what the session still owes a reading.
    start: usize,
}

impl HeldInput {
    /// True when nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// How many unused bytes are held.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Takes the buffer out (to read it while the session changes), leaving nothing held.
    /// [`give_back`](HeldInput::give_back) returns it with how much of it was used.
    pub(crate) fn take(&mut self) -> HeldInput {
        std::mem::take(self)
    }

    /// The unused bytes.
    pub(crate) fn unused(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Puts back a buffer taken with [`take`](HeldInput::take), of which `used` more bytes
    /// were read. All used: the memory goes too, so an idle session holds none.
    pub(crate) fn give_back(&mut self, mut taken: HeldInput, used: usize) {
        debug_assert!(
            self.buf.is_empty(),
            "nothing is held while the buffer is out"
        );
        taken.start += used;
        assert!(
            taken.start <= taken.buf.len(),
            "held input: used {used} bytes of {} unused",
            taken.buf.len() - (taken.start - used)
        );
        *self = if taken.is_empty() {
            HeldInput::default()
        } else {
            taken
        };
    }

    /// Appends at most `limit - len()` bytes of `data`, and returns how many. The used bytes
    /// are dropped first, so the buffer never grows past `limit`, nor reserves past it.
    pub(crate) fn append(&mut self, data: &[u8], limit: usize) -> usize {
        let n = limit.saturating_sub(self.len()).min(data.len());
        if n == 0 {
            return 0;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() < self.buf.len() + n {
            // Doubling, but never past the limit: plain doubling could reserve almost
            // twice it.
            let target = (self.buf.capacity() * 2).clamp(self.buf.len() + n, limit);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(&data[..n]);
        n
    }

    /// Drops everything held, and the memory.
    pub(crate) fn clear(&mut self) {
        *self = HeldInput::default();
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_bytes_leave_the_front_without_moving_the_rest() {
        let mut held = HeldInput::default();
        assert_eq!(held.append(b"NOOP\r\nRSET\r\nQUIT\r\n", 100), 18);
        let taken = held.take();
        assert!(held.is_empty());
        held.give_back(taken, 6);
        assert_eq!(held.unused(), b"RSET\r\nQUIT\r\n");
        let taken = held.take();
        held.give_back(taken, 6);
        assert_eq!(held.unused(), b"QUIT\r\n");
        assert_eq!(held.len(), 6);
    }

    #[test]
    fn all_used_releases_the_memory() {
        let mut held = HeldInput::default();
        held.append(&[b'x'; 4096], 10_000);
        let taken = held.take();
        held.give_back(taken, 4096);
        assert!(held.is_empty());
        assert_eq!(held.capacity(), 0);
    }

    #[test]
    fn the_limit_counts_only_unused_bytes_and_is_never_reserved_past() {
        let mut held = HeldInput::default();
        assert_eq!(held.append(&[b'a'; 80], 100), 80);
        assert_eq!(held.append(&[b'b'; 80], 100), 20);
        assert!(held.capacity() <= 100);
        let taken = held.take();
        held.give_back(taken, 50);
        // 50 unused: room for 50 more, after the used half is dropped.
        assert_eq!(held.append(&[b'c'; 80], 100), 50);
        assert_eq!(held.len(), 100);
        assert!(held.capacity() <= 100);
        assert_eq!(&held.unused()[..30], &[b'a'; 30]);
        assert_eq!(&held.unused()[30..50], &[b'b'; 20]);
        assert_eq!(&held.unused()[50..], &[b'c'; 50]);
    }

    #[test]
    #[should_panic(expected = "held input")]
    fn using_more_than_was_held_is_a_broken_invariant() {
        let mut held = HeldInput::default();
        held.append(b"abc", 10);
        let taken = held.take();
        held.give_back(taken, 4);
    }
}
