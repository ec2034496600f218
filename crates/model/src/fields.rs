//! The register of every personal field in the model.
//!
//! Each record's visitor hands out these statics, and [`ALL`] lists them, so
//! a policy file can be checked against it (an unknown field name is an
//! error) and the privacy manifest can say what each field is for.
//!
//! Defaults are the most private treatment that still lets the field serve
//! its program: identifiers, URLs, paths and destination IPs are dropped;
//! instants, durations, hosts and locations are generalised; free text is
//! scrubbed (generalised); the licence email and device fingerprint are
//! pseudonymised, because licence counting needs to link sessions but never
//! to read the address. The one clear default is `event.username`, the
//! opaque [`UserId`](crate::UserId) an event concerns (never a login or an
//! email): export and erasure find a person's events by it.
//!
//! # Fields taken from other fields
//!
//! Some fields are computed from another field of the same record, so
//! keeping one in clear would give back what the policy removed from the
//! other. [`DERIVED`] lists them, as data, and the policy check refuses a
//! policy that breaks them:
//!
//! | field | taken from | rule |
//! |---|---|---|
//! | `binary.file_name` | `binary.path` (its last component) | [`Derivation::Follows`]: always the path's treatment |
//! | `web_request.host` | `web_request.url` (its host) | [`Derivation::Reveals`]: clear only if the URL is clear |
//! | `execution.username` | `event.username` (the login of the person) | [`Derivation::Reveals`]: clear only if the user id is clear |
//!
//! # Time fields and the event's instant
//!
//! An event's own instant ([`Event::recorded_at`](crate::Event)) is not a
//! field a policy names: it is kept as coarse as the coarsest treatment of
//! the event kind's time fields ([`time_fields`]). A kind without time
//! fields keeps its instant to the policy's generalisation unit.

use crate::vocabulary::DataCategory::{DeviceInformation, FreeText, Identifier, NetworkActivity, Technical};
use crate::vocabulary::FieldSpec;
use crate::vocabulary::Treatment::{Clear, Generalise, Pseudonymise, Withhold};
use crate::vocabulary::ValueKind;

macro_rules! fields {
    ($($(#[$doc:meta])* $name:ident = ($path:literal, $cat:expr, $kind:ident, $default:expr, $purpose:literal);)*) => {
        /// One variant per field, in declaration order: its discriminant is
        /// the field's place in [`ALL`], which [`FieldSpec::index`] returns.
        #[allow(non_camel_case_types, clippy::upper_case_acronyms, dead_code)] // named after the statics; only cast
        enum Index { $($name),* }
        $(
            $(#[$doc])*
            pub static $name: FieldSpec =
                FieldSpec::new(Index::$name as usize, $path, $cat, ValueKind::$kind, $default, $purpose);
        )*
        /// Every personal field of the model, in declaration order.
        pub static ALL: &[&FieldSpec] = &[$(&$name),*];
    };
}

fields! {
    /// [`crate::Device::name`].
    DEVICE_NAME = ("device.name", DeviceInformation, Text, Withhold,
        "tell devices apart in the support console");
    /// [`crate::Device::ip`].
    DEVICE_IP = ("device.ip", Identifier, Ip, Withhold,
        "locate network problems of one device");
    /// [`crate::User::username`].
    USER_USERNAME = ("user.username", Identifier, Login, Withhold,
        "match a person's sessions across devices");
    /// [`crate::User::upn`].
    USER_UPN = ("user.upn", Identifier, Email, Withhold,
        "match a person with the customer's directory");
    /// [`crate::User::first_name`].
    USER_FIRST_NAME = ("user.first_name", Identifier, Name, Withhold,
        "personalised usage, when the person agreed");
    /// [`crate::User::last_name`].
    USER_LAST_NAME = ("user.last_name", Identifier, Name, Withhold,
        "personalised usage, when the person agreed");
    /// [`crate::User::job_title`].
    USER_JOB_TITLE = ("user.job_title", Identifier, Text, Withhold,
        "compare experience across roles");
    /// [`crate::User::email`].
    USER_EMAIL = ("user.email", Identifier, Email, Withhold,
        "personalised usage, when the person agreed");
    /// [`crate::User::phone`].
    USER_PHONE = ("user.phone", Identifier, Phone, Withhold,
        "reach the person about a support case");
    /// [`crate::Binary::file_name`]: the last component of `binary.path`,
    /// which it follows ([`DERIVED`]); a file name can name a person.
    BINARY_FILE_NAME = ("binary.file_name", Technical, Path, Withhold,
        "name the binary in the console");
    /// [`crate::Binary::path`].
    BINARY_PATH = ("binary.path", Technical, Path, Withhold,
        "tell copies of one binary apart");
    /// [`crate::Event::user`]: the opaque id of the person an event concerns,
    /// in every event kind. Clear by default: export and erasure of a person
    /// find their events by it. Pseudonymised, the event carries the
    /// pseudonym's text form ([`crate::UserId::from_pseudonym`]); dropped, no
    /// user. A user record's id ([`crate::User::id`]) is this field too:
    /// pseudonymised, the same text form; dropped, no user record.
    EVENT_USERNAME = ("event.username", Identifier, Login, Clear,
        "export and erase a person's events");
    /// [`crate::Execution::username`]: the operating system's login
    /// name of the account, never the user id.
    EXECUTION_USERNAME = ("execution.username", Identifier, Login, Withhold,
        "count distinct users of an application");
    /// [`crate::Execution::path`].
    EXECUTION_PATH = ("execution.path", Technical, Path, Withhold,
        "tell which copy of a binary ran");
    /// [`crate::Execution::start`].
    EXECUTION_START = ("execution.start", DeviceInformation, Timestamp, Generalise,
        "application use over the day");
    /// [`crate::Execution::duration`].
    EXECUTION_DURATION = ("execution.duration", DeviceInformation, Duration, Generalise,
        "how long applications are used");
    /// [`crate::WebRequest::url`].
    WEB_REQUEST_URL = ("web_request.url", NetworkActivity, Url, Withhold,
        "find the page that is slow");
    /// [`crate::WebRequest::host`].
    WEB_REQUEST_HOST = ("web_request.host", NetworkActivity, Host, Generalise,
        "domain reputation and web experience");
    /// [`crate::WebRequest::destination_ip`].
    WEB_REQUEST_DESTINATION_IP = ("web_request.destination_ip", NetworkActivity, Ip, Withhold,
        "find the server that is slow");
    /// [`crate::WebRequest::page_load`].
    WEB_REQUEST_PAGE_LOAD = ("web_request.page_load", NetworkActivity, Duration, Generalise,
        "web experience score");
    /// [`crate::Login::time`].
    LOGIN_TIME = ("login.time", DeviceInformation, Timestamp, Generalise,
        "login experience over the day");
    /// [`crate::Login::duration`].
    LOGIN_DURATION = ("login.duration", DeviceInformation, Duration, Generalise,
        "how long logins take");
    /// [`crate::Login::privileges`].
    LOGIN_PRIVILEGES = ("login.privileges", DeviceInformation, Privileges, Withhold,
        "find accounts with more rights than they need");
    /// [`crate::CrashReport::message`].
    CRASH_REPORT_MESSAGE = ("crash_report.message", FreeText, FreeText, Generalise,
        "diagnose crashes");
    /// [`crate::Feedback::text`].
    FEEDBACK_TEXT = ("feedback.text", FreeText, FreeText, Generalise,
        "read what users say about the product");
    /// [`crate::LicenceSession::email`].
    LICENCE_SESSION_EMAIL = ("licence_session.email", Identifier, Email, Pseudonymise,
        "count licensed seats");
    /// [`crate::LicenceSession::start`].
    LICENCE_SESSION_START = ("licence_session.start", DeviceInformation, Timestamp, Generalise,
        "licence session length");
    /// [`crate::LicenceSession::end`].
    LICENCE_SESSION_END = ("licence_session.end", DeviceInformation, Timestamp, Generalise,
        "licence session length");
    /// [`crate::LicenceSession::device_fingerprint`].
    LICENCE_SESSION_DEVICE_FINGERPRINT = ("licence_session.device_fingerprint", DeviceInformation, Text, Pseudonymise,
        "count licensed devices");
    /// [`crate::LicenceSession::geohash`].
    LICENCE_SESSION_GEOHASH = ("licence_session.geohash", NetworkActivity, Geohash, Generalise,
        "detect licence sharing across regions");
    /// [`crate::Interaction::duration`]: how long a person took for one
    /// action in a web application the customer defined. Exact durations
    /// of a person's work are a measure of that person; a bucket still
    /// tells a slow application from a fast one.
    INTERACTION_DURATION = ("interaction.duration", DeviceInformation, Duration, Generalise,
        "how long user actions take in the customer's web applications");
}

/// How a field taken from another field must be treated.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum Derivation {
    /// The field is a part of its source (a file name is the last
    /// component of its path): it always takes the source's treatment, and
    /// a policy cannot set it apart. Dropped path, dropped name;
    /// pseudonymised path, pseudonymised name.
    Follows,
    /// The field reveals part of its source (a URL's host, the login of the
    /// person a user id stands for): it may be kept in clear only when the
    /// source is kept in clear. Any other treatment of it is the policy's
    /// choice.
    Reveals,
}

/// One field taken from another field of the same record.
#[derive(Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Derived {
    /// The field taken from the source.
    pub field: &'static FieldSpec,
    /// The field it is taken from.
    pub source: &'static FieldSpec,
    /// How its treatment is bound to the source's.
    pub how: Derivation,
    /// What of the source it holds, in words.
    pub holds: &'static str,
}

/// Every field taken from another field (see the module docs for the table).
///
/// ```
/// use privtel_model::fields::{self, Derivation};
///
/// let host = fields::derivation(&fields::WEB_REQUEST_HOST).expect("a host is taken from its url");
/// assert_eq!(host.source.path, "web_request.url");
/// assert_eq!(host.how, Derivation::Reveals);
/// assert!(fields::derivation(&fields::WEB_REQUEST_URL).is_none());
/// ```
pub static DERIVED: &[Derived] = &[
    Derived {
        field: &BINARY_FILE_NAME,
        source: &BINARY_PATH,
        how: Derivation::Follows,
        holds: "the path's last component",
    },
    Derived {
        field: &WEB_REQUEST_HOST,
        source: &WEB_REQUEST_URL,
        how: Derivation::Reveals,
        holds: "the url's host",
    },
    Derived {
        field: &EXECUTION_USERNAME,
        source: &EVENT_USERNAME,
        how: Derivation::Reveals,
        holds: "the login name of the person the user id stands for",
    },
];

/// The derivation of `field`, if it is taken from another field.
pub fn derivation(field: &FieldSpec) -> Option<&'static Derived> {
    DERIVED.iter().find(|d| std::ptr::eq(d.field, field))
}

/// The time fields of each event kind: their treatments decide how coarse
/// the event's own instant is kept (the coarsest wins; see
/// [`time_fields`]).
pub static EVENT_TIME_FIELDS: &[(&str, &[&FieldSpec])] = &[
    ("execution", &[&EXECUTION_START]),
    ("login", &[&LOGIN_TIME]),
    ("licence_session", &[&LICENCE_SESSION_START, &LICENCE_SESSION_END]),
];

/// The time fields of the event kind `kind` (`login`): empty for a kind
/// with none (`web_request`) and for a kind that is not an event.
///
/// ```
/// use privtel_model::fields;
///
/// assert_eq!(fields::time_fields("login"), [&fields::LOGIN_TIME]);
/// assert!(fields::time_fields("web_request").is_empty());
/// ```
pub fn time_fields(kind: &str) -> &'static [&'static FieldSpec] {
    EVENT_TIME_FIELDS.iter().find(|(k, _)| *k == kind).map_or(&[], |(_, f)| f)
}

/// Whether records of `kind` (`web_request`, `binary`) carry `field`: its
/// path starts with the kind, or with `event` for every event kind, for
/// consent records and for user records (which name their person as events
/// do).
///
/// ```
/// use privtel_model::fields;
///
/// assert!(fields::carried_by(&fields::EVENT_USERNAME, "login"));
/// assert!(fields::carried_by(&fields::LOGIN_TIME, "login"));
/// assert!(fields::carried_by(&fields::EVENT_USERNAME, "user"));
/// assert!(!fields::carried_by(&fields::EVENT_USERNAME, "device"));
/// ```
pub fn carried_by(field: &FieldSpec, kind: &str) -> bool {
    match field.path.split_once('.') {
        // A user record's id is `event.username` too.
        Some(("event", _)) => crate::EventBody::KINDS.contains(&kind) || kind == "consent" || kind == "user",
        Some((record, _)) => record == kind,
        None => false,
    }
}

/// The field with this path, if the model has one.
pub fn by_path(path: &str) -> Option<&'static FieldSpec> {
    ALL.iter().copied().find(|f| f.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn paths_are_unique_and_found() {
        let paths: HashSet<_> = ALL.iter().map(|f| f.path).collect();
        assert_eq!(paths.len(), ALL.len());
        assert_eq!(by_path("user.email"), Some(&USER_EMAIL));
        assert_eq!(by_path("user.mail"), None);
    }

    #[test]
    fn index_is_the_place_in_all() {
        for (i, f) in ALL.iter().enumerate() {
            assert_eq!(f.index(), i, "{}", f.path);
        }
    }

    #[test]
    fn derived_fields_are_registered_and_not_chained() {
        for d in DERIVED {
            assert!(ALL.iter().any(|f| std::ptr::eq(*f, d.field)), "{}", d.field.path);
            assert!(ALL.iter().any(|f| std::ptr::eq(*f, d.source)), "{}", d.source.path);
            assert!(derivation(d.source).is_none(), "{} is taken from a derived field", d.field.path);
            // A follower has its source's default, so the defaults pass the check.
            if d.how == Derivation::Follows {
                assert_eq!(d.field.default_treatment, d.source.default_treatment, "{}", d.field.path);
            }
        }
        for (_, times) in EVENT_TIME_FIELDS {
            assert!(times.iter().all(|f| f.kind == ValueKind::Timestamp));
        }
        // Every instant field counts for its kind's instant.
        for f in ALL.iter().filter(|f| f.kind == ValueKind::Timestamp) {
            let kind = f.path.split('.').next().unwrap_or("");
            assert!(time_fields(kind).iter().any(|t| std::ptr::eq(*t, *f)), "{}", f.path);
        }
    }
}
