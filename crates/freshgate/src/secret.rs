//! Comparing secrets (write keys, bearer tokens) without leaking, through timing, how much of a
//! guess was right. Every comparison of a client-sent secret with a configured one goes through
//! [`eq`]; HMAC signatures are checked by `hmac`'s own constant-time `verify_slice`.
//!
//! Built on `subtle` rather than by hand: its comparison is written to stop the optimiser from
//! turning it back into an early-exit loop.

use subtle::ConstantTimeEq;

/// Whether `given` equals `expected`, in time that depends only on their lengths.
#[must_use]
pub fn eq(given: &[u8], expected: &[u8]) -> bool {
    #[cfg(test)]
    calls::bump();
    bool::from(given.ct_eq(expected))
}

/// How often [`eq`] ran on this thread: tests use it to prove that a check goes through it.
#[cfg(test)]
pub(crate) mod calls {
    use std::cell::Cell;

    thread_local! {
        static CALLS: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn bump() {
        CALLS.with(|c| c.set(c.get() + 1));
    }

    /// Calls of [`super::eq`] on this thread so far.
    pub(crate) fn count() -> usize {
        CALLS.with(Cell::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_and_unequal() {
        assert!(eq(b"key", b"key"));
        assert!(!eq(b"key", b"kez"));
        assert!(!eq(b"key", b"key2"));
        assert!(!eq(b"", b"k"));
        assert!(eq(b"", b""));
    }
}
