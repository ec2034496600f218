//! Keyed digests of what names a person: the user id, pseudonyms of the
//! fields that identify a person, clear logins (not system accounts),
//! email addresses and full names, and the user name in a path under a
//! home folder. Values that describe a machine, a file or a host (a device
//! fingerprint, a path, a host, `root`) are shared by many people and give
//! none. The engine indexes them per record (so erasure
//! finds records that name a person without carrying their user id) and
//! keeps them, never the values, in its suppression list.
//!
//! A digest is BLAKE3 in keyed mode under the store's secret, over a kind
//! tag, the customer id and the value, truncated to 128 bits: equal values
//! of one customer give equal digests, other customers' never do, and
//! without the secret a digest cannot be tested against guesses.

use std::fmt;

use privtel_model::{PersonalMut, Record, UserId, ValueKind, VisitPersonal};

/// Bytes kept of each digest: 128 bits, no accidental collision among the
/// values a store holds, half the index size of the full hash.
pub const DIGEST_LEN: usize = 16;

/// A keyed digest.
pub type Digest = [u8; DIGEST_LEN];

/// What a digest was made from. The codes are stored (`mentions.kind`) and
/// hashed (the tag): written out, never reused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MentionKind {
    /// A record's user id (suppression only, not indexed per record).
    User,
    /// A pseudonym: key id and token.
    Pseudonym,
    /// A login, or the user name of a path under `/home/` or `/Users/`,
    /// exactly.
    Login,
    /// A login or a Windows home folder's user name, lowercase (Windows
    /// compares user names without case).
    LoginFolded,
    /// An email address or UPN, lowercase.
    Email,
    /// A record's name fields together (first and last name), so a shared
    /// first name alone links nobody.
    FullName,
}

impl MentionKind {
    /// The stored code and hash tag.
    pub const fn code(self) -> u8 {
        match self {
            Self::User => 1,
            Self::Pseudonym => 2,
            Self::Login => 3,
            Self::LoginFolded => 4,
            Self::Email => 5,
            Self::FullName => 6,
        }
    }

    /// The kind a stored code stands for; `None` for a code no version
    /// wrote.
    pub const fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Self::User,
            2 => Self::Pseudonym,
            3 => Self::Login,
            4 => Self::LoginFolded,
            5 => Self::Email,
            6 => Self::FullName,
            _ => return None,
        })
    }
}

/// The store's keyed-hash secret (the 32 bytes of
/// [`EngineOptions::secret`](crate::EngineOptions::secret)). `Debug` never
/// prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub [u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<secret>)")
    }
}

impl Secret {
    /// The digest of `value` of `kind` for `customer`.
    pub fn digest(&self, customer: &str, kind: MentionKind, value: &[u8]) -> Digest {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        // Customer ids are at most 64 bytes: one length byte frames them.
        h.update(&[kind.code(), customer.len() as u8]);
        h.update(customer.as_bytes());
        h.update(value);
        let mut out = [0; DIGEST_LEN];
        out.copy_from_slice(&h.finalize().as_bytes()[..DIGEST_LEN]);
        out
    }

    /// The digest of a user id.
    pub fn user(&self, customer: &str, user: &UserId) -> Digest {
        self.digest(customer, MentionKind::User, user.as_str().as_bytes())
    }

    /// A value that tells whether a secret is the one a store was made
    /// with, without revealing it.
    pub fn check(&self) -> Digest {
        self.digest("", MentionKind::User, b"privtel-store secret check")
    }
}

/// Fields whose pseudonym names a person (docs/FIELDS.md, "Which fields
/// link a person"): the user id an event concerns, a user record's
/// identifiers and the licence email. A pseudonym of any other field (a
/// path, a host, a URL, a device fingerprint, a device name, a login of
/// `execution.username`, which may be `root`'s, a first name) may be
/// shared by many people and links no one.
pub const PSEUDONYM_LINKS: &[&str] =
    &["event.username", "user.username", "user.upn", "user.email", "licence_session.email"];

/// Fields whose clear value names a person, and how it is compared: logins
/// (not a system or shared account, [`system_account`]), email addresses,
/// name parts (together, as one full name) and paths (by the user name of
/// a home folder, not a shared one). No other clear field links anyone.
pub const CLEAR_LINKS: &[(&str, ValueKind)] = &[
    ("user.username", ValueKind::Login),
    ("execution.username", ValueKind::Login),
    ("user.upn", ValueKind::Email),
    ("user.email", ValueKind::Email),
    ("licence_session.email", ValueKind::Email),
    ("user.first_name", ValueKind::Name),
    ("user.last_name", ValueKind::Name),
    ("binary.path", ValueKind::Path),
    ("execution.path", ValueKind::Path),
];

/// Accounts and home folders that are not one person's: the system's
/// accounts (Unix and Windows), shared and default profiles. Compared
/// lowercase, after any `DOMAIN\` prefix.
const SYSTEM_ACCOUNTS: &[&str] = &[
    "root",
    "toor",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "nfsnobody",
    "messagebus",
    "sshd",
    "syslog",
    "admin",
    "administrator",
    "guest",
    "system",
    "local service",
    "localservice",
    "network service",
    "networkservice",
    "defaultaccount",
    "wdagutilityaccount",
    "trustedinstaller",
    "public",
    "default",
    "default user",
    "all users",
    "defaultuser0",
    "shared",
];

/// Whether a login (or a home folder's name) is a system or shared account
/// rather than a person's: one of the system and shared account names
/// (`root`, `SYSTEM`, `Public`, …) in any case, a service account (`_www`,
/// `systemd-network`), a machine account (`HOST$`), or a bare number (a
/// uid with no name).
pub fn system_account(login: &str) -> bool {
    let bare = login.rsplit_once('\\').map_or(login, |(_, b)| b).trim();
    let l = bare.to_lowercase();
    l.is_empty()
        || SYSTEM_ACCOUNTS.contains(&l.as_str())
        || l.starts_with('_')
        || l.starts_with("systemd-")
        || l.ends_with('$')
        || l.bytes().all(|b| b.is_ascii_digit())
}

/// Every digest a record's personal fields give that names a person
/// (deduplicated, in a fixed order), for `customer` under `secret`
/// (docs/STORAGE.md, "Keyed digests"): pseudonyms of
/// [`PSEUDONYM_LINKS`], clear values of [`CLEAR_LINKS`]. Values that
/// describe a machine, a file or a host give none. Visiting needs `&mut`
/// but changes nothing.
pub fn mentions(record: &mut Record, customer: &str, secret: &Secret) -> Vec<(MentionKind, Digest)> {
    let mut out: Vec<(MentionKind, Digest)> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    record.visit_personal(&mut |field| {
        if let Some(p) = field.value.pseudonym() {
            if PSEUDONYM_LINKS.contains(&field.spec.path) {
                let mut bytes = p.key_id().get().to_le_bytes().to_vec();
                bytes.extend_from_slice(p.token());
                out.push((MentionKind::Pseudonym, secret.digest(customer, MentionKind::Pseudonym, &bytes)));
            }
            return;
        }
        let PersonalMut::Text(text) = &field.value else { return };
        let Some(value) = text.clear_value() else { return };
        let Some((_, kind)) = CLEAR_LINKS.iter().find(|(path, _)| *path == field.spec.path) else { return };
        match kind {
            ValueKind::Login => {
                if system_account(value) {
                    return;
                }
                let mut login = |l: &str| {
                    if l.is_empty() {
                        return;
                    }
                    out.push((MentionKind::Login, secret.digest(customer, MentionKind::Login, l.as_bytes())));
                    let folded = l.to_lowercase();
                    out.push((
                        MentionKind::LoginFolded,
                        secret.digest(customer, MentionKind::LoginFolded, folded.as_bytes()),
                    ));
                };
                login(value);
                // `CORP\alice` is also `alice`.
                if let Some((_, bare)) = value.rsplit_once('\\') {
                    login(bare);
                }
            }
            ValueKind::Email => {
                let folded = value.to_lowercase();
                out.push((
                    MentionKind::Email,
                    secret.digest(customer, MentionKind::Email, folded.as_bytes()),
                ));
            }
            ValueKind::Name => names.push(value.clone()),
            ValueKind::Path => {
                if let Some((kind, name)) = home_user(value)
                    && !system_account(&name)
                {
                    out.push((kind, secret.digest(customer, kind, name.as_bytes())));
                }
            }
            _ => {}
        }
    });
    if !names.is_empty() {
        // Unit separator: "Ann Lee" + "Smith" differs from "Ann" + "Lee Smith".
        let full = names.join("\u{1f}").to_lowercase();
        out.push((MentionKind::FullName, secret.digest(customer, MentionKind::FullName, full.as_bytes())));
    }
    out.sort_unstable_by_key(|m| m.1);
    out.dedup_by(|a, b| a.1 == b.1);
    out
}

/// The digests of one stored record's mention rows (`(kind code,
/// digest)`, as the engines keep them) that link a person under the rule
/// of [`mentions`]. Rows written before that rule may hold digests of
/// values that link no one (a device fingerprint's pseudonym, `root`), so
/// the record itself decides: when it opens (`record`), its links are
/// recomputed; when it does not (a row whose key is gone), its stored
/// emails, full names and logins other than system accounts link, its
/// pseudonyms (whose field the row does not say) do not. The user id's
/// digest (kind 1) is never among them.
///
/// # Errors
///
/// [`Error::Corrupt`](crate::Error::Corrupt) for a kind code no version
/// wrote.
pub fn linking(
    stored: &[(i64, Digest)],
    record: Option<&mut Record>,
    customer: &str,
    secret: &Secret,
) -> crate::Result<Vec<(Digest, i64)>> {
    for (kind, _) in stored {
        if MentionKind::from_code(*kind).is_none() {
            return Err(crate::Error::Corrupt {
                what: "mention kind",
                reason: format!("code {kind} is unknown, expected 1 to 6"),
            });
        }
    }
    if let Some(record) = record {
        return Ok(mentions(record, customer, secret)
            .into_iter()
            .map(|(k, d)| (d, i64::from(k.code())))
            .collect());
    }
    let system = system_digests(customer, secret);
    let mut out: Vec<(Digest, i64)> = stored
        .iter()
        .filter(|(kind, d)| match MentionKind::from_code(*kind) {
            Some(MentionKind::Login | MentionKind::LoginFolded) => !system.contains(d),
            Some(MentionKind::Email | MentionKind::FullName) => true,
            _ => false,
        })
        .map(|(k, d)| (*d, *k))
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The login digests of the system accounts' usual spellings (`root`,
/// `ROOT`, `Root`; folded), to recognise them among stored rows.
fn system_digests(customer: &str, secret: &Secret) -> std::collections::HashSet<Digest> {
    let mut out = std::collections::HashSet::new();
    for name in SYSTEM_ACCOUNTS {
        let mut capital = name.to_string();
        if let Some(first) = capital.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        for spelling in [name.to_string(), name.to_uppercase(), capital] {
            out.insert(secret.digest(customer, MentionKind::Login, spelling.as_bytes()));
        }
        out.insert(secret.digest(customer, MentionKind::LoginFolded, name.as_bytes()));
    }
    out
}

/// The user name of a path under a home folder, and how it compares:
/// `/home/NAME/…` and `/Users/NAME/…` exactly, `X:\Users\NAME\…` (either
/// slash, any case) lowercase.
pub(crate) fn home_user(path: &str) -> Option<(MentionKind, String)> {
    let segment = |rest: &str| -> Option<String> {
        let end = rest.find(['/', '\\']).unwrap_or(rest.len());
        let name = &rest[..end];
        (!name.is_empty() && name != "." && name != "..").then(|| name.to_owned())
    };
    for prefix in ["/home/", "/Users/"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let end = rest.find('/').unwrap_or(rest.len());
            let name = &rest[..end];
            return (!name.is_empty() && name != "." && name != "..")
                .then(|| (MentionKind::Login, name.to_owned()));
        }
    }
    let bytes = path.as_bytes();
    if bytes.len() > 9
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && matches!(bytes[2], b'\\' | b'/')
        && bytes[3..8].eq_ignore_ascii_case(b"users")
        && matches!(bytes[8], b'\\' | b'/')
    {
        return segment(&path[9..]).map(|n| (MentionKind::LoginFolded, n.to_lowercase()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_folders() {
        let table: &[(&str, Option<(MentionKind, &str)>)] = &[
            ("/home/alice/bin/tool", Some((MentionKind::Login, "alice"))),
            ("/home/alice", Some((MentionKind::Login, "alice"))),
            ("/home/Alice/x", Some((MentionKind::Login, "Alice"))),
            ("/Users/bob/Library/x", Some((MentionKind::Login, "bob"))),
            ("C:\\Users\\Carol\\AppData\\x.exe", Some((MentionKind::LoginFolded, "carol"))),
            ("d:/USERS/Dave/x.exe", Some((MentionKind::LoginFolded, "dave"))),
            ("c:\\users\\EVE", Some((MentionKind::LoginFolded, "eve"))),
            ("/home//x", None),
            ("/home/../etc/passwd", None),
            ("/usr/bin/tool", None),
            ("/homes/alice/x", None),
            ("C:\\Program Files\\x.exe", None),
            ("C:\\Users\\", None),
        ];
        for (path, want) in table {
            let got = home_user(path);
            assert_eq!(got.as_ref().map(|(k, n)| (*k, n.as_str())), *want, "{path}");
        }
    }

    #[test]
    fn digests_are_scoped_by_customer_kind_and_secret() {
        let s = Secret([1; 32]);
        let d = s.digest("c1", MentionKind::Login, b"alice");
        assert_eq!(d, s.digest("c1", MentionKind::Login, b"alice"));
        assert_ne!(d, s.digest("c2", MentionKind::Login, b"alice"));
        assert_ne!(d, s.digest("c1", MentionKind::LoginFolded, b"alice"));
        assert_ne!(d, Secret([2; 32]).digest("c1", MentionKind::Login, b"alice"));
        // The length byte frames the customer id.
        assert_ne!(s.digest("c1", MentionKind::Login, b"xa"), s.digest("c1x", MentionKind::Login, b"a"));
        assert!(!format!("{s:?}").contains('1'));
    }
}
