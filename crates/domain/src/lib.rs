//! From any URL or host name to a canonical host and its registrable domain
//! (eTLD+1), with the Public Suffix List compiled in.
//!
//! Web activity leaves a device only as domain names, so this is where a URL
//! stops being a URL. Input comes from browsers, proxies and network logs:
//! full URLs, bare hosts, `host:port`, upper case, Unicode, odd IPv4
//! notations, garbage.
//!
//! # Example
//!
//! ```
//! use privtel_domain::{ErrorKind, Normalizer, Section};
//!
//! let n = Normalizer::shared();
//! let out = n.normalize("HTTPS://User@WWW.Example.CO.UK.:8443/a?q=1")?;
//! assert_eq!(out.host(), "www.example.co.uk");
//! assert_eq!(out.registrable(), Some("example.co.uk"));
//! assert_eq!(out.suffix(), Some("co.uk"));
//! assert_eq!(out.section(), Some(Section::Icann));
//!
//! let ip = n.normalize("0x7f.1")?; // WHATWG reads hex and short IPv4 forms
//! assert_eq!(ip.host(), "127.0.0.1");
//! assert_eq!(ip.registrable(), None);
//!
//! let err = n.normalize("file:///etc/passwd").unwrap_err();
//! assert_eq!(err.kind().to_string(), "scheme 'file' is not a web scheme (expected http, https, ws, wss or ftp)");
//!
//! // Any other scheme is refused, even when what follows looks like a host.
//! let mail = n.normalize("MAILTO:bob@example.com").unwrap_err();
//! assert_eq!(mail.kind(), &ErrorKind::Scheme("mailto".into()));
//! // A port after the colon makes it a host.
//! assert_eq!(n.normalize("localhost:8080")?.host(), "localhost");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The contract
//!
//! 1. Only leading and trailing C0 control characters and spaces
//!    (U+0000–U+0020) are trimmed, as WHATWG does (`str::trim` would also
//!    strip a trailing NBSP, which is part of a host). Empty input is an error.
//!    ASCII tabs and newlines inside the input are removed before rule 2
//!    reads it, as the URL parser removes them (so `mail\tto:` is `mailto:`).
//! 2. An input that starts with an RFC 3986 scheme
//!    (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`) followed by `:` is read
//!    by that scheme, case-insensitively:
//!    * `http`, `https`, `ws`, `wss` or `ftp`: parsed as a URL as it is
//!      (`ftp:example.com` too);
//!    * any other word, when a port follows the `:` (1 to 5 digits of value
//!      at most 65535, then the end, `/`, `\`, `?` or `#`): a bare
//!      `host:port`, parsed as `http://` + input (`localhost:8080`,
//!      `example.com:8080/x`);
//!    * any other word otherwise: a scheme, refused by rule 4 whatever
//!      follows (`mailto:bob@example.com`, `javascript:alert(1)`,
//!      `about:blank`, `tel:+331234`, `urn:isbn:1`, `chrome://settings`).
//!
//!    This makes `user:pass@example.com` the scheme `user`: it cannot be told
//!    apart from `mailto:bob@example.com` or `skype:bob@example.com`, which
//!    are not web visits. Write `http://user:pass@example.com` or
//!    `//user:pass@example.com` for a web host with userinfo. An empty port
//!    or a number that is no port is not a port: `example.com:` and
//!    `example.com:99999` are the scheme `example.com`, `tel:0123456789` the
//!    scheme `tel`. The one reading this gets wrong is a non-web scheme
//!    followed by a short number alone, such as `tel:112`: it cannot be told
//!    apart from `intranet:112`, and is read as a host with a port.
//!    Input without such a prefix (`host`, `host/path`, `//host/path`,
//!    `[::1]:80`, `my_host:8080`, `bücher.example:80`) is parsed as
//!    `http://` + input.
//! 3. Parsing uses the WHATWG URL parser (the `url` crate); a parse failure
//!    is an error.
//! 4. Only http, https, ws, wss and ftp are accepted: any other scheme is
//!    [`ErrorKind::Scheme`], never a port error and never a host. It names
//!    the scheme in lowercase, cut to [`MAX_SCHEME_ECHO`] characters, and
//!    nothing after the `:`. An empty host is an error.
//! 5. IPv4 hosts come out as dotted quads (the parser reads decimal, octal,
//!    hex and short forms); IPv6 hosts as the `url` crate serialises them, in
//!    brackets (`[2001:db8::1]`). An IP address has no registrable domain.
//! 6. Domain hosts lose leading and trailing dots, and runs of dots collapse
//!    to one (as Safe Browsing canonicalisation does); if that changed
//!    anything, the result is parsed as a host again, so `1.2.3.4..` is the
//!    IPv4 address `1.2.3.4`. Nothing left is an error.
//! 7. Every label is at most 63 octets and the host at most 253, in ASCII
//!    (punycode) form without a trailing dot; else an error. Characters a
//!    DNS name cannot hold (which the URL parser lets through, like `*`) are
//!    an error too.
//! 8. Percent-decoding happens once, in the URL parser, never again: `%2561`
//!    becomes `%61`, whose `%` is then not allowed in a host.
//! 9. The registrable domain uses the full Public Suffix List, ICANN and
//!    private sections (as browsers do), with the implicit `*` rule for
//!    unknown TLDs (`example.example` → `example.example`; `localhost` →
//!    none). A host that is itself a public suffix has none.
//!    [`NormalizerBuilder::icann_only`] restricts lookups to the ICANN
//!    section. [`Normalized::section`] says which section matched (`None`
//!    for the implicit rule) and [`Normalized::tld_known`] whether the TLD
//!    is in the list.
//! 10. The output host is lowercase ASCII (punycode for IDN), without port,
//!     userinfo or trailing dot; normalizing it again gives the same result.
//!
//! Two cases of the official `test_psl.txt` differ by rule 6:
//! `.example.com` and `.example.example` there have no registrable domain
//! (a leading dot makes them invalid); here the dot is stripped and they
//! give `example.com` and `example.example`.
//!
//! # Speed
//!
//! Most inputs are a plain ASCII host or an `http(s)` URL whose authority
//! needs no decoding. Those take a fast path that never builds a `Url` and
//! gives exactly the answers of the full path (a property test runs both on
//! generated inputs); everything else takes the full path. The fast path
//! also takes hosts whose IDN labels (Unicode, or `xn--`) are labels of the
//! list's rules, written left to right: their ASCII forms are worked out
//! once, when the list is loaded, by the same host parser the full path
//! uses (`img.спб.рус` → `img.xn--90a1af.xn--p1acf` without idna).
//!
//! # The list
//!
//! A dated copy of `public_suffix_list.dat` is compiled in (see
//! [`EMBEDDED_LIST_VERSION`]), so [`Normalizer::default`] needs no I/O;
//! [`NormalizerBuilder::list`] takes a newer list as text.
//!
//! # Crate features
//!
//! None.

mod error;
mod host;
mod labels;
mod suffixes;

use std::net::IpAddr;
use std::sync::OnceLock;

pub use error::{Error, ErrorKind, ListError, Result};
/// The model's registrable domain, which [`Normalized::registrable_domain`]
/// returns.
pub use privtel_model::Domain;

/// The Public Suffix List compiled into the crate (MPL-2.0, header kept).
pub const EMBEDDED_LIST: &str = include_str!("../data/public_suffix_list.dat");

/// The `VERSION` line of the embedded list.
pub const EMBEDDED_LIST_VERSION: &str = "2026-10-22_08-36-41_UTC";

/// The most characters of a scheme an [`ErrorKind::Scheme`] repeats: a
/// longer scheme is cut to this length (in lowercase, like every scheme it
/// names).
///
/// ```
/// use privtel_domain::{ErrorKind, Normalizer, MAX_SCHEME_ECHO};
///
/// let long = format!("{}:x", "s".repeat(100));
/// let err = Normalizer::shared().normalize(&long).unwrap_err();
/// assert_eq!(err.kind(), &ErrorKind::Scheme("s".repeat(MAX_SCHEME_ECHO)));
/// ```
pub const MAX_SCHEME_ECHO: usize = 32;

/// The `COMMIT` line of the embedded list.
pub const EMBEDDED_LIST_COMMIT: &str = "8437e5262f13305f94087abe699b4fe2be1d1de8";

/// Which section of the Public Suffix List a suffix came from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum Section {
    /// Registry-operated suffixes (`com`, `co.uk`).
    Icann,
    /// Suffixes submitted by companies for their users (`github.io`).
    Private,
}

/// What kind of host a [`Normalized`] holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum HostKind {
    /// A domain name.
    Domain,
    /// An IPv4 address.
    Ipv4,
    /// An IPv6 address.
    Ipv6,
}

/// A canonical host and what the Public Suffix List says about it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Normalized {
    host: String,
    kind: HostKind,
    /// Byte offset in `host` where the registrable domain starts.
    registrable: Option<usize>,
    /// Byte offset in `host` where the public suffix starts.
    suffix: Option<usize>,
    section: Option<Section>,
    tld_known: bool,
}

impl Normalized {
    /// The canonical host: a lowercase ASCII domain, a dotted-quad IPv4
    /// address, or a bracketed IPv6 address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the host is a domain or an IP address.
    pub fn kind(&self) -> HostKind {
        self.kind
    }

    /// The IP address, if the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.kind {
            HostKind::Domain => None,
            _ => self.host.trim_start_matches('[').trim_end_matches(']').parse().ok(),
        }
    }

    /// The registrable domain (eTLD+1): `None` for IP addresses and for
    /// hosts that are themselves a public suffix.
    pub fn registrable(&self) -> Option<&str> {
        self.registrable.map(|at| &self.host[at..])
    }

    /// The registrable domain as the model's [`privtel_model::Domain`].
    pub fn registrable_domain(&self) -> Option<Domain> {
        // Every host that gets here passed the same character and length
        // rules as `Domain`, so the conversion cannot fail; `ok()` keeps
        // that reasoning from becoming a panic if it were ever wrong.
        self.registrable().and_then(|d| Domain::new(d).ok())
    }

    /// The public suffix (`co.uk`), `None` for IP addresses.
    pub fn suffix(&self) -> Option<&str> {
        self.suffix.map(|at| &self.host[at..])
    }

    /// The section the suffix rule came from; `None` for the implicit `*`
    /// rule (unknown TLDs) and for IP addresses.
    pub fn section(&self) -> Option<Section> {
        self.section
    }

    /// Whether the TLD is in the list.
    pub fn tld_known(&self) -> bool {
        self.tld_known
    }
}

/// Builds a [`Normalizer`].
#[derive(Clone, Debug, Default)]
pub struct NormalizerBuilder {
    icann_only: bool,
    list: Option<String>,
}

impl NormalizerBuilder {
    /// A builder: embedded list, both sections.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use only the ICANN section of the list (default: false, both sections
    /// as browsers do).
    pub fn icann_only(&mut self, yes: bool) -> &mut Self {
        self.icann_only = yes;
        self
    }

    /// Use this list text (the format of `public_suffix_list.dat`) instead
    /// of the embedded one.
    pub fn list(&mut self, text: impl Into<String>) -> &mut Self {
        self.list = Some(text.into());
        self
    }

    /// The normalizer.
    ///
    /// # Errors
    ///
    /// [`ListError`] if the list text does not parse or holds no rule.
    pub fn build(&self) -> Result<Normalizer, ListError> {
        let text = self.list.as_deref().unwrap_or(EMBEDDED_LIST);
        let suffixes = suffixes::Suffixes::parse(text, self.icann_only)?;
        Ok(Normalizer { suffixes, idn: labels::IdnLabels::parse(text) })
    }
}

/// Turns URLs and hosts into canonical hosts and registrable domains.
/// Build it once and share it: it is `Send + Sync` and never changes.
#[derive(Clone, Debug)]
pub struct Normalizer {
    suffixes: suffixes::Suffixes,
    /// The list's IDN labels in ASCII form, for the fast path.
    idn: labels::IdnLabels,
}

impl Default for Normalizer {
    /// The embedded list, both sections.
    fn default() -> Self {
        match NormalizerBuilder::new().build() {
            Ok(n) => n,
            // The embedded list is checked by the tests; it cannot fail to
            // parse in a released build.
            Err(e) => unreachable!("the embedded public suffix list is valid: {e}"),
        }
    }
}

impl Normalizer {
    /// A builder for a normalizer with another list or the ICANN section only.
    pub fn builder() -> NormalizerBuilder {
        NormalizerBuilder::new()
    }

    /// One normalizer with the embedded list, built on first use and shared
    /// by the whole process.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<Normalizer> = OnceLock::new();
        SHARED.get_or_init(Self::default)
    }

    /// Normalizes one URL or host (see the crate docs for the contract).
    ///
    /// # Errors
    ///
    /// [`Error`] naming the input and the rule it broke.
    pub fn normalize(&self, input: &str) -> Result<Normalized> {
        let trimmed = host::trim_c0(input);
        let host = match host::fast(trimmed, &self.idn) {
            Some(fast) => fast,
            None => host::full(trimmed),
        }
        .map_err(|kind| Error::new(input, kind))?;
        Ok(self.lookup(host))
    }

    /// The full path only (no fast path): for the tests that prove the two
    /// agree.
    #[cfg(test)]
    fn normalize_full(&self, input: &str) -> Result<Normalized> {
        let host = host::full(host::trim_c0(input)).map_err(|kind| Error::new(input, kind))?;
        Ok(self.lookup(host))
    }

    fn lookup(&self, host: host::Host) -> Normalized {
        let (host, kind) = match host {
            host::Host::Domain(d) => (d, HostKind::Domain),
            host::Host::Ipv4(s) => (s, HostKind::Ipv4),
            host::Host::Ipv6(s) => (s, HostKind::Ipv6),
        };
        if kind != HostKind::Domain {
            return Normalized {
                host,
                kind,
                registrable: None,
                suffix: None,
                section: None,
                tld_known: false,
            };
        }
        let suffixes::Found { len, section, tld_known } = self.suffixes.find(&host);
        let suffix = host.len().checked_sub(len);
        // The registrable domain is the suffix and one label more, if the
        // host has one more.
        let registrable =
            suffix.filter(|&at| at >= 2).map(|at| suffixes::label_start(host.as_bytes(), at - 1));
        Normalized { host, kind, registrable, suffix, section, tld_known }
    }
}

#[cfg(test)]
mod tests;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
