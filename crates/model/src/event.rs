//! Events: things that happened on a device at a time.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::Duration;

use crate::binary::Digest;
use crate::device::OsInfo;
use crate::fields;
use crate::id::{DeviceId, EventId, UserId};
use crate::personal::Personal;
use crate::timestamp::Timestamp;
use crate::values::Privileges;
use crate::values::{Domain, Finite, Geohash, Score};
use crate::visit::{PersonalField, PersonalMut, VisitPersonal};

/// One event, with what every event has: id, device, person and time.
///
/// `Debug` prints the user id as a personal value: its form only
/// (`Clear(<redacted>)`, `Pseudonym(k1:…)`, `Withheld`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event's id, minted by the agent.
    pub id: EventId,
    /// The device it happened on.
    pub device: DeviceId,
    /// The person it concerns, if any: the personal field `event.username`
    /// ([`fields::EVENT_USERNAME`]). Clear, the person's opaque id;
    /// pseudonymised, the pseudonym's text form
    /// ([`UserId::from_pseudonym`]); dropped, `None`. Export and erasure of
    /// that person find the event by it.
    pub user: Option<UserId>,
    /// When the agent recorded it: the clock its time to live runs from.
    /// The filter keeps it as coarse as the coarsest treatment of the kind's
    /// time fields ([`fields::time_fields`]), rounded toward the past, so a
    /// coarsened instant never makes the event live longer.
    pub recorded_at: Timestamp,
    /// What happened.
    pub body: EventBody,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut user = self.user.clone();
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("device", &self.device)
            .field("user", &PersonalMut::UserId(&mut user))
            .field("recorded_at", &self.recorded_at)
            .field("body", &self.body)
            .finish()
    }
}

impl VisitPersonal for Event {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        f(PersonalField::new(&fields::EVENT_USERNAME, PersonalMut::UserId(&mut self.user)));
        self.body.visit_personal(f);
    }
}

/// What happened, by kind.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventBody {
    /// A binary ran.
    Execution(Execution),
    /// A web request or network connection.
    WebRequest(WebRequest),
    /// A person logged in.
    Login(Login),
    /// The product crashed.
    CrashReport(CrashReport),
    /// A product feature was used.
    FeatureUsage(FeatureUsage),
    /// A product configuration value.
    Configuration(ConfigSample),
    /// A product performance measurement.
    Performance(PerformanceSample),
    /// A person rated the product.
    Feedback(Feedback),
    /// A licence session (cloud licence authentication).
    LicenceSession(LicenceSession),
    /// The product asked whether a newer version exists.
    VersionCheck(VersionCheck),
    /// The device's digital-experience score.
    ExperienceScore(ExperienceScore),
    /// Keyboard and mouse interaction with a web application the customer
    /// defined, during one action the customer defined. Appended last:
    /// the binary form numbers variants by position.
    Interaction(Interaction),
}

impl EventBody {
    /// The name of every event kind, as [`EventBody::kind_name`] gives it.
    pub const KINDS: [&'static str; 12] = [
        "execution",
        "web_request",
        "login",
        "crash_report",
        "feature_usage",
        "configuration",
        "performance",
        "feedback",
        "licence_session",
        "version_check",
        "experience_score",
        "interaction",
    ];

    /// The snake_case name of the kind (`web_request`), as used in field paths
    /// and logs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Execution(_) => "execution",
            Self::WebRequest(_) => "web_request",
            Self::Login(_) => "login",
            Self::CrashReport(_) => "crash_report",
            Self::FeatureUsage(_) => "feature_usage",
            Self::Configuration(_) => "configuration",
            Self::Performance(_) => "performance",
            Self::Feedback(_) => "feedback",
            Self::LicenceSession(_) => "licence_session",
            Self::VersionCheck(_) => "version_check",
            Self::ExperienceScore(_) => "experience_score",
            Self::Interaction(_) => "interaction",
        }
    }
}

impl VisitPersonal for EventBody {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        match self {
            Self::Execution(e) => e.visit_personal(f),
            Self::WebRequest(e) => e.visit_personal(f),
            Self::Login(e) => e.visit_personal(f),
            Self::CrashReport(e) => e.visit_personal(f),
            Self::Feedback(e) => e.visit_personal(f),
            Self::LicenceSession(e) => e.visit_personal(f),
            Self::Interaction(e) => e.visit_personal(f),
            // No personal fields: listed so that adding one to these types
            // means touching this match.
            Self::FeatureUsage(FeatureUsage { .. })
            | Self::Configuration(ConfigSample { .. })
            | Self::Performance(PerformanceSample { .. })
            | Self::VersionCheck(VersionCheck { .. })
            | Self::ExperienceScore(ExperienceScore { .. }) => {}
        }
    }
}

/// The old name of [`Execution`].
#[deprecated(
    since = "0.1.0",
    note = "one name per concept: use `Execution` (the variant `EventBody::Execution`, the policy paths `execution.*`)"
)]
pub type BinaryExecution = Execution;

/// A binary ran on the device.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Execution {
    /// SHA-256 of the binary that ran.
    pub sha256: Digest,
    /// The operating system's login name of the account that ran it (the
    /// file's owner, for an execution seen by a scan), never the user id.
    pub username: Personal<String>,
    /// Where the binary was on disk.
    pub path: Personal<String>,
    /// When it started.
    pub start: Personal<Timestamp>,
    /// How long it ran.
    #[serde(with = "crate::iso8601::serde_personal_duration")]
    pub duration: Personal<Duration>,
}

impl VisitPersonal for Execution {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        f(PersonalField::new(&fields::EXECUTION_USERNAME, PersonalMut::Text(&mut self.username)));
        f(PersonalField::new(&fields::EXECUTION_PATH, PersonalMut::Text(&mut self.path)));
        f(PersonalField::new(&fields::EXECUTION_START, PersonalMut::Timestamp(&mut self.start)));
        f(PersonalField::new(&fields::EXECUTION_DURATION, PersonalMut::Duration(&mut self.duration)));
    }
}

/// A web request or connection.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WebRequest {
    /// The full URL.
    pub url: Personal<String>,
    /// The host name.
    pub host: Personal<String>,
    /// The server's IP address.
    pub destination_ip: Personal<IpAddr>,
    /// The server's port.
    pub destination_port: u16,
    /// How long the page took to load.
    #[serde(with = "crate::iso8601::serde_personal_duration")]
    pub page_load: Personal<Duration>,
    /// How many visits this event stands for (aggregated by the agent).
    pub visit_count: u32,
}

impl VisitPersonal for WebRequest {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        f(PersonalField::new(&fields::WEB_REQUEST_URL, PersonalMut::Text(&mut self.url)));
        f(PersonalField::new(&fields::WEB_REQUEST_HOST, PersonalMut::Text(&mut self.host)));
        f(PersonalField::new(&fields::WEB_REQUEST_DESTINATION_IP, PersonalMut::Ip(&mut self.destination_ip)));
        f(PersonalField::new(&fields::WEB_REQUEST_PAGE_LOAD, PersonalMut::Duration(&mut self.page_load)));
    }
}

/// A person logged in to the device.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Login {
    /// When.
    pub time: Personal<Timestamp>,
    /// How long the login took.
    #[serde(with = "crate::iso8601::serde_personal_duration")]
    pub duration: Personal<Duration>,
    /// The account's rights.
    pub privileges: Personal<Privileges>,
}

impl VisitPersonal for Login {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        f(PersonalField::new(&fields::LOGIN_TIME, PersonalMut::Timestamp(&mut self.time)));
        f(PersonalField::new(&fields::LOGIN_DURATION, PersonalMut::Duration(&mut self.duration)));
        f(PersonalField::new(&fields::LOGIN_PRIVILEGES, PersonalMut::Privileges(&mut self.privileges)));
    }
}

/// The product crashed.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct CrashReport {
    /// The product that crashed.
    pub product: String,
    /// Its version.
    pub version: String,
    /// The crash message and stack, free text: may hold anything.
    pub message: Personal<String>,
}

impl VisitPersonal for CrashReport {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        f(PersonalField::new(&fields::CRASH_REPORT_MESSAGE, PersonalMut::Text(&mut self.message)));
    }
}

/// A product feature was used.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct FeatureUsage {
    /// The product.
    pub product: String,
    /// The feature's name, from the product's own list.
    pub feature: String,
    /// How many times in the period the event covers.
    pub count: u32,
}

/// A product configuration value (support telemetry).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ConfigSample {
    /// The product.
    pub product: String,
    /// The setting's key, from the product's own list.
    pub key: String,
    /// The setting's value.
    pub value: String,
}

/// A product performance measurement (support telemetry).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct PerformanceSample {
    /// The product.
    pub product: String,
    /// What was measured (`startup_time`).
    pub metric: String,
    /// The measured value (finite: NaN and infinities are rejected).
    pub value: Finite,
    /// The unit (`ms`, `MiB`).
    pub unit: String,
}

/// A person rated the product.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Feedback {
    /// The product.
    pub product: String,
    /// The rating, scaled to 0–100.
    pub score: Score,
    /// What they wrote: free text.
    pub text: Personal<String>,
}

impl VisitPersonal for Feedback {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        f(PersonalField::new(&fields::FEEDBACK_TEXT, PersonalMut::Text(&mut self.text)));
    }
}

/// A licence session: who used a cloud licence, from where, for how long.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LicenceSession {
    /// The account email.
    pub email: Personal<String>,
    /// When the session started.
    pub start: Personal<Timestamp>,
    /// When it ended; `Withheld` while it is still open.
    pub end: Personal<Timestamp>,
    /// A fingerprint of the device (hardware ids combined by the product).
    pub device_fingerprint: Personal<String>,
    /// The device's operating system.
    pub os: OsInfo,
    /// Coarse location, derived from the public IP address.
    pub geohash: Personal<Geohash>,
}

impl VisitPersonal for LicenceSession {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        f(PersonalField::new(&fields::LICENCE_SESSION_EMAIL, PersonalMut::Text(&mut self.email)));
        f(PersonalField::new(&fields::LICENCE_SESSION_START, PersonalMut::Timestamp(&mut self.start)));
        f(PersonalField::new(&fields::LICENCE_SESSION_END, PersonalMut::Timestamp(&mut self.end)));
        f(PersonalField::new(
            &fields::LICENCE_SESSION_DEVICE_FINGERPRINT,
            PersonalMut::Text(&mut self.device_fingerprint),
        ));
        f(PersonalField::new(&fields::LICENCE_SESSION_GEOHASH, PersonalMut::Geohash(&mut self.geohash)));
    }
}

/// The product asked whether a newer version exists.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VersionCheck {
    /// The product.
    pub product: String,
    /// The version installed.
    pub current_version: String,
    /// The update channel (`stable`, `beta`).
    pub channel: String,
}

/// The device's digital-experience score for a period.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ExperienceScore {
    /// The score, 0–100.
    pub score: Score,
    /// The period the score covers, ending at the event's time.
    #[serde(with = "crate::iso8601::serde_duration")]
    pub period: Duration,
}

/// Keyboard and mouse interaction with a web application during one user
/// action ("create a ticket", "search"), recorded only for applications and
/// actions the customer's policy defines (`[interactions]` in the policy;
/// anything else is dropped on the device and refused by the service).
///
/// The application is a host name, never a URL: no path, query or page
/// title leaves. The action is a name from the customer's list, never text
/// typed by the person. Key and click counts say how much input the action
/// took, not which keys: no character typed is recorded. The person is the
/// event's user (`event.username`); the action's duration is the personal
/// field `interaction.duration` (generalised to a bucket by default).
///
/// ```
/// use privtel_model::{Domain, Duration, EventBody, Interaction, Personal};
///
/// let body = EventBody::Interaction(Interaction {
///     application: Domain::new("crm.example.com")?,
///     action: "create_ticket".into(),
///     keys: 212,
///     clicks: 9,
///     duration: Personal::Clear(Duration::seconds(48)),
/// });
/// assert_eq!(body.kind_name(), "interaction");
/// # Ok::<(), privtel_model::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Interaction {
    /// The web application: its host name in canonical form (lowercase,
    /// punycode, no port), as the customer's policy names it.
    pub application: Domain,
    /// The action, by its name in the customer's list for the application.
    pub action: String,
    /// Key presses during the action (a count: which keys is never kept).
    pub keys: u32,
    /// Mouse clicks during the action.
    pub clicks: u32,
    /// How long the action took, from its first input to its end.
    #[serde(with = "crate::iso8601::serde_personal_duration")]
    pub duration: Personal<Duration>,
}

impl VisitPersonal for Interaction {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        f(PersonalField::new(&fields::INTERACTION_DURATION, PersonalMut::Duration(&mut self.duration)));
    }
}
