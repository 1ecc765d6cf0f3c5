//! `chouquette_protocol::client::parse` must never panic, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match chouquette_protocol::client::parse(text) {
        Ok(msg) => {
            let _ = msg.body.class();
        }
        Err(e) => {
            // The error is sent back to clients: it must stay short.
            let _ = e.to_string();
        }
    }
});
