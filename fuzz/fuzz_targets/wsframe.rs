//! Fuzz target: the relay's WebSocket frame decoder (`ws::codec::Decoder`) on any bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealcast_fuzz::wsframe(data));
