//! The `path` query of every file route: `workspace_relative` either refuses
//! or answers a relative path with no `..`, no empty or `.` component and no
//! NUL, which it accepts again unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rel) = godel_core::workspace_relative(s) {
        assert!(!rel.starts_with('/'), "{s:?} -> {rel:?}");
        assert!(!rel.contains('\0'));
        if !rel.is_empty() {
            assert!(
                rel.split('/')
                    .all(|c| !c.is_empty() && c != "." && c != ".."),
                "{s:?} -> {rel:?}"
            );
        }
        assert_eq!(godel_core::workspace_relative(&rel).ok(), Some(rel));
    }
});
