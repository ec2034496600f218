//! Integration tests of privtel-authority: the register through its API,
//! and real TLS on 127.0.0.1 with a minimal server loop.

mod api;
mod support;
mod tls;
