//! Fuzz target: `Authenticator::verify_connect` / `verify_publish`, on any bytes.
#![no_main]

use std::sync::LazyLock;

static AUTH: LazyLock<sealcast::auth::Authenticator> = LazyLock::new(sealcast_fuzz::authenticator);

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealcast_fuzz::token(data, &AUTH));
