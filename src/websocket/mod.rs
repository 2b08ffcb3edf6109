//! RFC 6455 WebSockets, the server's side (pure, no I/O): `frame` decodes what a client sends
//! (masking, lengths, RSV bits, opcodes, control-frame rules), reassembles messages with
//! incremental UTF-8 validation and a size limit, and encodes the frames a server sends;
//! `handshake` checks an opening handshake and computes `Sec-WebSocket-Accept`. Used by the
//! httpd child's tunnel between a client and an ASGI application.
#![forbid(unsafe_code)]

pub mod frame;
pub mod handshake;
