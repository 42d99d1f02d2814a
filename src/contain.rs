//! Containing panics in background threads: a panic inside redb (a file damaged after open can
//! make it panic) or inside a caller's [`Clock`](crate::Clock) must not end `lessor-ticker` or
//! `lessor-keepalive` silently.
//!
//! [`contain`] runs one pass of a thread's loop under [`std::panic::catch_unwind`] and turns a
//! panic into the message it carried, which the thread counts as a failure and publishes in
//! [`Lessor::health`](crate::Lessor::health). The locks a pass takes are `parking_lot`'s, which
//! are released when a panic unwinds through their guards and are never poisoned, so the next
//! pass can take them again.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`; a panic becomes `Err` with its message, prefixed with "panicked: ".
///
/// `AssertUnwindSafe`: what a pass shares is behind `parking_lot` locks and atomics, which stay
/// usable after a panic; a half-done pass is the case the callers handle (retry, or record it).
pub(crate) fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| format!("panicked: {}", message(&*payload)))
}

/// Runs `f`, which works on storage; a panic (redb panics on some damage its checks did not
/// catch) becomes [`Error::Corrupted`](crate::Error::Corrupted) saying so.
pub(crate) fn storage<T>(f: impl FnOnce() -> crate::Result<T>) -> crate::Result<T> {
    contain(f).unwrap_or_else(|msg| {
        Err(crate::Error::Corrupted(format!(
            "the storage engine {msg} (the file may be damaged)"
        )))
    })
}

/// Whether `e` is what [`storage`] made of a panic.
pub(crate) fn is_panic(e: &crate::Error) -> bool {
    matches!(e, crate::Error::Corrupted(why) if why.starts_with("the storage engine panicked"))
}

/// The message a panic carried: its `&str` or `String` payload, or a placeholder.
pub(crate) fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_a_value_passes_through() {
        assert_eq!(contain(|| 7), Ok(7));
        let r: Result<(), String> = contain(|| panic!("disk page {} is bad", 3));
        assert_eq!(r, Err("panicked: disk page 3 is bad".to_owned()));
        let r: Result<(), String> = contain(|| std::panic::panic_any(42u8));
        assert_eq!(r, Err("panicked: a panic without a message".to_owned()));
    }
}
