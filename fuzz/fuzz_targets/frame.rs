//! Fuzz target: `ClientFrame::parse` and the name parsers, on any bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealcast_fuzz::frame(data));
