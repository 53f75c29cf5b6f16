//! The wire protocol: validated names, client and server frames, close codes.
//! Everything a socket or HTTP body says becomes one of these types at the edge.

pub mod close;
pub mod frames;
pub mod names;

pub use close::CloseCode;
pub use frames::{ClientFrame, ErrorCode, FrameError, ServerFrame, Since, encode_pub};
pub use names::{AppId, Channel, EventName, NameError, Namespace};

#[cfg(test)]
mod proptests;
