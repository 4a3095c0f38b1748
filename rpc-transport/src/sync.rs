//! The crate's one poison-tolerant lock.
//!
//! Every mutex of the crate guards state whose updates are single pushes, removals or
//! replacements (or are rebuilt by the next look), which a panic elsewhere cannot leave
//! half done; and no lock is held across an await or a call into user code. A
//! poisoned lock is therefore taken as it is rather than spreading the panic to every
//! later caller.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_taken() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison on purpose");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
