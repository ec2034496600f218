//! From any URL or host name to a canonical host and its registrable domain
//! (eTLD+1), with the Public Suffix List compiled in.
//!
//! Input comes from browsers, proxies and network logs; web activity leaves a
//! device only as domain names, so this is where a URL stops being a URL.
//!
//! *Status: the layout is in place; the normalizer arrives with the domain
//! normalization issue.*
