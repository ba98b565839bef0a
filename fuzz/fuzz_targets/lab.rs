//! The lab file's reader on arbitrary text: YAML parsing, decoding, validation (what
//! `vpcd check` and `vpcd apply` run on a file they are handed), and for a lab that passes,
//! compilation into a snapshot, as `control::load_text` does. Every outcome is an `Ok` or a
//! list of diagnostics, never a panic; and a valid lab must compile.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match control::check_text(text) {
        Ok(lab) => {
            // A lab that `check` accepts and the compiler refuses is a validation gap.
            if let Err(e) = control::compile::compile(&lab, 1) {
                panic!("a lab that passes validation does not compile: {e}");
            }
        }
        Err(diags) => assert!(!diags.is_empty(), "refused without a diagnostic"),
    }
});
