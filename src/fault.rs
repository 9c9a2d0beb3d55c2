//! Fault injection for the tests that prove background tasks are supervised: with
//! `LOGCATCH_PANIC_ONCE=<task>[,<task>...]` in its environment, a debug build panics the
//! first time each named task reaches its injection point. Release builds ignore it.

/// Panics once per process for `task` when `LOGCATCH_PANIC_ONCE` names it (debug builds).
pub fn panic_once(task: &str) {
    #[cfg(debug_assertions)]
    {
        use std::collections::BTreeSet;
        use std::sync::Mutex;
        static FIRED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
        let named = std::env::var("LOGCATCH_PANIC_ONCE")
            .is_ok_and(|tasks| tasks.split(',').any(|t| t.trim() == task));
        if named
            && FIRED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(task.to_string())
        {
            panic!("injected panic in {task} (LOGCATCH_PANIC_ONCE)");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = task;
}
