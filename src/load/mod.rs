//! The load generator behind `sealcast-load` (performance issue): drives a real relay over
//! real sockets on 127.0.0.1. Written on [`crate::client`].
