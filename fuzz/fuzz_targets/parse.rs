//! Any input to parse + validate (and, when valid, render) returns a value or problems: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scalectl::render::{render, Facts, Templates};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match scalectl::topology::parse("fuzz.yaml", text) {
        Ok(t) => {
            let _ = render(&t, &Facts::with_default_cores(2), &Templates::embedded());
        }
        Err(p) => {
            let _ = p.report(false);
        }
    }
});
