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
//! to read the address.

use crate::personal::DataCategory::{DeviceInformation, FreeText, Identifier, NetworkActivity, Technical};
use crate::personal::FieldSpec;
use crate::personal::Treatment::{Drop, Generalise, Pseudonymise};
use crate::personal::ValueKind;

macro_rules! fields {
    ($($(#[$doc:meta])* $name:ident = ($path:literal, $cat:expr, $kind:ident, $default:expr, $purpose:literal);)*) => {
        $(
            $(#[$doc])*
            pub static $name: FieldSpec = FieldSpec::new($path, $cat, ValueKind::$kind, $default, $purpose);
        )*
        /// Every personal field of the model, in declaration order.
        pub static ALL: &[&FieldSpec] = &[$(&$name),*];
    };
}

fields! {
    /// [`crate::Device::name`].
    DEVICE_NAME = ("device.name", DeviceInformation, Text, Drop,
        "tell devices apart in the support console");
    /// [`crate::Device::ip`].
    DEVICE_IP = ("device.ip", Identifier, Ip, Drop,
        "locate network problems of one device");
    /// [`crate::User::username`].
    USER_USERNAME = ("user.username", Identifier, Login, Drop,
        "match a person's sessions across devices");
    /// [`crate::User::upn`].
    USER_UPN = ("user.upn", Identifier, Email, Drop,
        "match a person with the customer's directory");
    /// [`crate::User::first_name`].
    USER_FIRST_NAME = ("user.first_name", Identifier, Name, Drop,
        "personalised usage, when the person agreed");
    /// [`crate::User::last_name`].
    USER_LAST_NAME = ("user.last_name", Identifier, Name, Drop,
        "personalised usage, when the person agreed");
    /// [`crate::User::job_title`].
    USER_JOB_TITLE = ("user.job_title", Identifier, Text, Drop,
        "compare experience across roles");
    /// [`crate::User::email`].
    USER_EMAIL = ("user.email", Identifier, Email, Drop,
        "personalised usage, when the person agreed");
    /// [`crate::User::phone`].
    USER_PHONE = ("user.phone", Identifier, Phone, Drop,
        "reach the person about a support case");
    /// [`crate::Binary::path`].
    BINARY_PATH = ("binary.path", Technical, Path, Drop,
        "tell copies of one binary apart");
    /// [`crate::BinaryExecution::username`].
    EXECUTION_USERNAME = ("execution.username", Identifier, Login, Drop,
        "count distinct users of an application");
    /// [`crate::BinaryExecution::path`].
    EXECUTION_PATH = ("execution.path", Technical, Path, Drop,
        "tell which copy of a binary ran");
    /// [`crate::BinaryExecution::start`].
    EXECUTION_START = ("execution.start", DeviceInformation, Timestamp, Generalise,
        "application use over the day");
    /// [`crate::BinaryExecution::duration`].
    EXECUTION_DURATION = ("execution.duration", DeviceInformation, Duration, Generalise,
        "how long applications are used");
    /// [`crate::WebRequest::url`].
    WEB_REQUEST_URL = ("web_request.url", NetworkActivity, Url, Drop,
        "find the page that is slow");
    /// [`crate::WebRequest::host`].
    WEB_REQUEST_HOST = ("web_request.host", NetworkActivity, Host, Generalise,
        "domain reputation and web experience");
    /// [`crate::WebRequest::destination_ip`].
    WEB_REQUEST_DESTINATION_IP = ("web_request.destination_ip", NetworkActivity, Ip, Drop,
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
    LOGIN_PRIVILEGES = ("login.privileges", DeviceInformation, Privileges, Drop,
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
}
