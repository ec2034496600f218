//! From input text to a canonical host: the fast path and the full WHATWG
//! path. The Public Suffix List is not involved here.

use crate::error::ErrorKind;
use crate::labels::IdnLabels;

/// A canonical host.
pub(crate) enum Host {
    /// Lowercase ASCII, dots cleaned, lengths checked.
    Domain(String),
    /// Dotted quad.
    Ipv4(String),
    /// Bracketed, as the `url` crate serialises it.
    Ipv6(String),
}

const MAX_LABEL: usize = 63;
const MAX_HOST: usize = 253;
use crate::MAX_SCHEME_ECHO;
const WEB_SCHEMES: [&str; 5] = ["http", "https", "ws", "wss", "ftp"];

/// Rule 1: trims U+0000–U+0020 at both ends, nothing else.
pub(crate) fn trim_c0(s: &str) -> &str {
    s.trim_matches(|c: char| c <= '\u{20}')
}

/// Rule 2: how an input is read.
enum Reading<'a> {
    /// A web scheme: parsed as a URL as it is.
    Url,
    /// A bare host (`host`, `host:port`, `host/path`, `//host`, `[v6]`):
    /// parsed as `http://` + input.
    Host,
    /// Any other scheme (as written, not yet lowercased): an error.
    Scheme(&'a str),
}

/// Rule 2. An RFC 3986 scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`)
/// followed by `:` is a scheme, unless what follows the `:` is a port: 1 to
/// 5 digits of value at most 65535, then the end, `/`, `\`, `?` or `#`.
fn reading(s: &str) -> Reading<'_> {
    let b = s.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_alphabetic) {
        return Reading::Host;
    }
    let end = b.iter().position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')));
    let Some(end) = end.filter(|&end| b[end] == b':') else {
        return Reading::Host;
    };
    let scheme = &s[..end];
    if WEB_SCHEMES.iter().any(|w| scheme.eq_ignore_ascii_case(w)) {
        return Reading::Url;
    }
    let after = &b[end + 1..];
    let digits = after.iter().position(|c| !c.is_ascii_digit()).unwrap_or(after.len());
    let port = (1..=5).contains(&digits)
        && after[..digits].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65_535;
    if port && matches!(after.get(digits), None | Some(b'/' | b'\\' | b'?' | b'#')) {
        Reading::Host
    } else {
        Reading::Scheme(scheme)
    }
}

/// Rule 1: WHATWG removes ASCII tabs and newlines anywhere in the input
/// before reading it; so does rule 2, so that `mail\tto:` is a scheme too.
fn strip_tabs_and_newlines(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\t', '\n', '\r']) { s.replace(['\t', '\n', '\r'], "").into() } else { s.into() }
}

/// Rules 6 and 7 on a domain the URL parser produced (lowercase ASCII):
/// clean the dots, then check characters and lengths.
fn finish_domain(domain: &str) -> Result<Host, ErrorKind> {
    let cleaned = collapse_dots(domain);
    if cleaned.is_empty() {
        return Err(ErrorKind::EmptyHost);
    }
    if cleaned != domain {
        // Rule 6: a changed host is parsed again, so `1.2.3.4..` is an IPv4
        // address and not a domain.
        match url::Host::parse(&cleaned) {
            Ok(url::Host::Domain(d)) => return check_domain(d),
            Ok(url::Host::Ipv4(a)) => return Ok(Host::Ipv4(a.to_string())),
            Ok(url::Host::Ipv6(a)) => return Ok(Host::Ipv6(format!("[{a}]"))),
            Err(e) => return Err(ErrorKind::Url(e.to_string())),
        }
    }
    check_domain(cleaned)
}

/// Strips leading and trailing dots and collapses runs of dots.
fn collapse_dots(domain: &str) -> String {
    let mut out = String::with_capacity(domain.len());
    for label in domain.split('.').filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(label);
    }
    out
}

/// Rule 7 and the host-name alphabet, on a cleaned lowercase host.
fn check_domain(host: String) -> Result<Host, ErrorKind> {
    if let Some(c) = host
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
    {
        return Err(ErrorKind::Character(c));
    }
    if let Some(long) = host.split('.').map(str::len).find(|&n| n > MAX_LABEL) {
        return Err(ErrorKind::LabelTooLong(long));
    }
    if host.len() > MAX_HOST {
        return Err(ErrorKind::HostTooLong(host.len()));
    }
    Ok(Host::Domain(host))
}

/// Rules 2–7 through the WHATWG parser.
pub(crate) fn full(input: &str) -> Result<Host, ErrorKind> {
    if input.is_empty() {
        return Err(ErrorKind::Empty);
    }
    let input = strip_tabs_and_newlines(input);
    let parsed = match reading(&input) {
        Reading::Url => url::Url::parse(&input),
        Reading::Host => url::Url::parse(&format!("http://{input}")),
        Reading::Scheme(scheme) => {
            // The scheme is the one part of the input a rule names; keep it
            // short so no error carries a long piece of input.
            let mut scheme: String = scheme.chars().take(MAX_SCHEME_ECHO).collect();
            scheme.make_ascii_lowercase();
            return Err(ErrorKind::Scheme(scheme));
        }
    };
    let url = parsed.map_err(|e| ErrorKind::Url(e.to_string()))?;
    match url.host() {
        None => Err(ErrorKind::EmptyHost),
        Some(url::Host::Ipv4(a)) => Ok(Host::Ipv4(a.to_string())),
        // `host_str` is the url crate's own serialisation, in brackets;
        // std's `Display` writes IPv4-mapped addresses differently.
        Some(url::Host::Ipv6(_)) => Ok(Host::Ipv6(url.host_str().unwrap_or_default().to_owned())),
        Some(url::Host::Domain(d)) => finish_domain(d),
    }
}

/// The fast path: `Some` with the answer the full path would give, or
/// `None` when the input needs the full path (anything beyond plain ASCII
/// host characters and the IDN labels of `idn`, userinfo, IPv6, percent
/// signs, numeric last labels, unusual ports or schemes). A bare `word:` is
/// answered here only when a port of 1 to 5 digits follows, which rule 2
/// reads as `host:port` too; every other `word:` (a scheme, or an empty
/// port) goes to the full path.
///
/// One pass over the bytes: lowercases, drops empty labels, puts IDN labels
/// in their ASCII form, checks label lengths, and stops at the end of the
/// authority.
pub(crate) fn fast(input: &str, idn: &IdnLabels) -> Option<Result<Host, ErrorKind>> {
    let b = input.as_bytes();
    let rest = if b.len() >= 7 && b[..7].eq_ignore_ascii_case(b"http://") {
        &b[7..]
    } else if b.len() >= 8 && b[..8].eq_ignore_ascii_case(b"https://") {
        &b[8..]
    } else {
        b
    };
    let bare = rest.len() == b.len();
    // One more byte than the host can take: the dot after each label.
    let mut out: Vec<u8> = Vec::with_capacity(rest.len() + 1);
    let mut label_start = 0; // in `out`
    let mut last_label = 0..0; // in `out`
    let mut long_label = None;
    let mut unicode = false; // the label being read has a non-ASCII byte
    let mut i = 0;
    // Closes the label that ends at `out.len()`, if it is not empty; false
    // if it needs the full path.
    let mut close = |out: &mut Vec<u8>,
                     label_start: &mut usize,
                     last_label: &mut std::ops::Range<usize>,
                     unicode: &mut bool|
     -> bool {
        let label = &out[*label_start..];
        if label.is_empty() {
            return true;
        }
        if std::mem::take(unicode) || label.starts_with(b"xn--") {
            let Some(ascii) = idn.ascii(label) else { return false };
            out.truncate(*label_start);
            out.extend_from_slice(ascii.as_bytes());
        }
        let len = out.len() - *label_start;
        if len > MAX_LABEL && long_label.is_none() {
            long_label = Some(len);
        }
        *last_label = *label_start..out.len();
        out.push(b'.');
        *label_start = out.len();
        true
    };
    while i < rest.len() {
        match rest[i] {
            c @ (b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_') => out.push(c),
            c @ b'A'..=b'Z' => out.push(c.to_ascii_lowercase()),
            b'.' => {
                if !close(&mut out, &mut label_start, &mut last_label, &mut unicode) {
                    return None;
                }
            }
            b':' | b'/' | b'?' | b'#' => break,
            c @ 0x80.. => {
                // Part of a non-ASCII character (the input is UTF-8, and
                // the bytes of a character never stop a label).
                out.push(c);
                unicode = true;
            }
            _ => return None,
        }
        i += 1;
    }
    if !close(&mut out, &mut label_start, &mut last_label, &mut unicode) {
        return None;
    }
    out.pop(); // the dot after the last label
    if out.is_empty() {
        return None;
    }
    // What follows the host: nothing, a path/query/fragment, or a port.
    if rest.get(i) == Some(&b':') {
        if bare && WEB_SCHEMES.iter().any(|s| out == s.as_bytes()) {
            return None; // `ws:80`: a web scheme, not a host
        }
        let port = &rest[i + 1..];
        let end = port.iter().position(|c| matches!(c, b'/' | b'?' | b'#')).unwrap_or(port.len());
        let digits = &port[..end];
        let valid = (1..=5).contains(&digits.len())
            && digits.iter().all(u8::is_ascii_digit)
            && digits.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65_535;
        if !valid {
            return None;
        }
    }
    // A numeric last label (or a `0x` one) makes the WHATWG parser read an
    // IPv4 address, or fail; leave those to it.
    let last = &out[last_label];
    if last.iter().all(u8::is_ascii_digit) || last.starts_with(b"0x") {
        return None;
    }
    if let Some(len) = long_label {
        return Some(Err(ErrorKind::LabelTooLong(len)));
    }
    if out.len() > MAX_HOST {
        return Some(Err(ErrorKind::HostTooLong(out.len())));
    }
    // Only ASCII letters, digits, '-', '_' and '.' are left: a label with
    // another byte went to the full path or was replaced by its ASCII form.
    String::from_utf8(out).ok().map(|host| Ok(Host::Domain(host)))
}
