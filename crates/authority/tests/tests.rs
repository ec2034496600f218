//! Integration tests: real TLS on 127.0.0.1.
