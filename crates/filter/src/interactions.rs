//! The web applications and actions whose interaction events a customer
//! records ([`Interactions`], the policy's `[interactions]` table).
//!
//! Keyboard and mouse interaction is recorded only "if previously defined by
//! the customer": an [`privtel_model::Interaction`] event passes the filter
//! (and the service's admission) only when its application is one the
//! customer named and its action is in that application's list. Nothing
//! defined, nothing recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use privtel_domain::Normalizer;
use privtel_model::Domain;

/// The most applications a policy may define.
pub const MAX_INTERACTION_APPLICATIONS: usize = 1_000;
/// The most actions one application may define.
pub const MAX_INTERACTION_ACTIONS: usize = 200;
/// The longest action name, in bytes.
pub const MAX_ACTION_LEN: usize = 64;

/// Why an application or action cannot be defined. Names the rule and a
/// position, never the text given (the host's text is the caller's to show).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InteractionError {
    /// Not a web host (privtel-domain's rule, which never repeats the input).
    #[error("not a web host: {0}")]
    Host(privtel_domain::ErrorKind),
    /// An IP address: a web application is named by its host name.
    #[error("expected a host name, not an ip address")]
    IpAddress,
    /// A host that normalises to a name the model cannot hold.
    #[error("expected a host name the model can hold (lowercase ascii labels, punycode for idn)")]
    NotCanonical,
    /// The same host twice (after normalisation: `CRM.example.com` is
    /// `crm.example.com`).
    #[error("defined twice (hosts are compared after normalisation)")]
    DuplicateApplication,
    /// An application with no action: it would record nothing.
    #[error("expected at least one action")]
    NoActions,
    /// An action name outside the charset or length.
    #[error(
        "action {position} is not an action name (expected 1 to {MAX_ACTION_LEN} ascii letters, \
         digits, '_', '-' or '.')"
    )]
    ActionName {
        /// Its place in the list, from 1.
        position: usize,
    },
    /// The same action twice in one application's list.
    #[error("action {position} is listed twice")]
    DuplicateAction {
        /// Its second place in the list, from 1.
        position: usize,
    },
    /// Too many actions for one application.
    #[error("{count} actions, expected at most {MAX_INTERACTION_ACTIONS}")]
    TooManyActions {
        /// How many were given.
        count: usize,
    },
    /// Too many applications.
    #[error("more than {MAX_INTERACTION_APPLICATIONS} applications")]
    TooManyApplications,
}

/// Whether `name` is an action name: 1 to [`MAX_ACTION_LEN`] ASCII letters,
/// digits, `_`, `-` or `.`.
///
/// ```
/// use privtel_filter::is_action_name;
///
/// assert!(is_action_name("create_ticket"));
/// assert!(!is_action_name("create ticket"));
/// assert!(!is_action_name(""));
/// ```
pub fn is_action_name(name: &str) -> bool {
    (1..=MAX_ACTION_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The web applications (by host name) and, for each, the actions whose
/// interaction events are recorded. Empty by default: every interaction
/// event is dropped.
///
/// ```
/// use privtel_filter::Interactions;
/// use privtel_model::Domain;
///
/// let mut defined = Interactions::default();
/// defined.define("https://CRM.Example.com/app", ["create_ticket", "search"])?;
/// let crm = Domain::new("crm.example.com")?;
/// assert!(defined.allows(&crm, "search"));
/// assert!(!defined.allows(&crm, "export_all"), "an action the customer did not define");
/// assert!(!defined.allows(&Domain::new("mail.example.com")?, "search"), "nor another host");
/// // What an SDK does with the host a browser gives it:
/// assert_eq!(defined.application("crm.example.com:443"), Some(crm));
/// assert_eq!(defined.application("mail.example.com"), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Interactions {
    applications: BTreeMap<Domain, BTreeSet<String>>,
}

impl fmt::Debug for Interactions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.applications.iter().map(|(d, a)| (d.as_str(), a))).finish()
    }
}

impl Interactions {
    /// Defines `host` (a host name, or a URL read for its host, normalised
    /// by privtel-domain) with `actions`, and returns the application's
    /// canonical name.
    ///
    /// # Errors
    ///
    /// [`InteractionError`]: a host that is not a web host name (an IP
    /// address included), one defined already, no action, an action that
    /// is not an [action name](is_action_name) or is listed twice, or more
    /// than [`MAX_INTERACTION_ACTIONS`] actions or
    /// [`MAX_INTERACTION_APPLICATIONS`] applications.
    pub fn define<I, S>(&mut self, host: &str, actions: I) -> Result<Domain, InteractionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let application = canonical_host(host)?;
        if self.applications.contains_key(&application) {
            return Err(InteractionError::DuplicateApplication);
        }
        if self.applications.len() >= MAX_INTERACTION_APPLICATIONS {
            return Err(InteractionError::TooManyApplications);
        }
        let mut set = BTreeSet::new();
        for (i, action) in actions.into_iter().enumerate() {
            let action = action.as_ref();
            if i >= MAX_INTERACTION_ACTIONS {
                return Err(InteractionError::TooManyActions { count: i + 1 });
            }
            if !is_action_name(action) {
                return Err(InteractionError::ActionName { position: i + 1 });
            }
            if !set.insert(action.to_owned()) {
                return Err(InteractionError::DuplicateAction { position: i + 1 });
            }
        }
        if set.is_empty() {
            return Err(InteractionError::NoActions);
        }
        self.applications.insert(application.clone(), set);
        Ok(application)
    }

    /// Whether an interaction with `application` during `action` is
    /// recorded: the application is defined and the action is in its list
    /// (exactly: names are case-sensitive).
    pub fn allows(&self, application: &Domain, action: &str) -> bool {
        self.applications.get(application).is_some_and(|actions| actions.contains(action))
    }

    /// The defined application `host` names (a host name or URL, in any
    /// case, with or without port), or `None` when it is not a web host or
    /// not defined: what a recorder calls before it measures anything.
    pub fn application(&self, host: &str) -> Option<Domain> {
        canonical_host(host).ok().filter(|d| self.applications.contains_key(d))
    }

    /// Whether no application is defined (nothing is recorded).
    pub fn is_empty(&self) -> bool {
        self.applications.is_empty()
    }

    /// How many applications are defined.
    pub fn len(&self) -> usize {
        self.applications.len()
    }

    /// Each application and its actions, sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&Domain, impl Iterator<Item = &str>)> {
        self.applications.iter().map(|(d, a)| (d, a.iter().map(String::as_str)))
    }
}

impl crate::policy::Policy {
    /// Whether `record` may pass as far as interactions go: `true` for a
    /// record that is no interaction event, and for an interaction event
    /// whose application and action the policy defines
    /// ([`Interactions::allows`]).
    ///
    /// ```
    /// use privtel_filter::Policy;
    /// use privtel_model::*;
    ///
    /// let policy = Policy::from_toml("[interactions]\n\"crm.example.com\" = [\"search\"]\n")?;
    /// let event = |action: &str| -> Result<Record, Error> {
    ///     Ok(Record {
    ///     program: Program::PersonalisedUsage,
    ///     body: RecordBody::Event(Event {
    ///         id: EventId::from_u128(1),
    ///         device: DeviceId::new("dev-1")?,
    ///         user: None,
    ///         recorded_at: Timestamp::from_unix_seconds(1_800_000_000)?,
    ///         body: EventBody::Interaction(Interaction {
    ///             application: Domain::new("crm.example.com")?,
    ///             action: action.into(),
    ///             keys: 3,
    ///             clicks: 1,
    ///             duration: Personal::Withheld,
    ///         }),
    ///     }),
    ///     })
    /// };
    /// assert!(policy.interaction_defined(&event("search")?));
    /// assert!(!policy.interaction_defined(&event("delete_all")?));
    /// assert!(!Policy::default().interaction_defined(&event("search")?), "nothing defined by default");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn interaction_defined(&self, record: &privtel_model::Record) -> bool {
        use privtel_model::{EventBody, RecordBody};
        match &record.body {
            RecordBody::Event(e) => match &e.body {
                EventBody::Interaction(i) => self.interactions.allows(&i.application, &i.action),
                _ => true,
            },
            _ => true,
        }
    }
}

/// The canonical host name of `host`, as the model holds it.
fn canonical_host(host: &str) -> Result<Domain, InteractionError> {
    let n = Normalizer::shared().normalize(host).map_err(|e| InteractionError::Host(e.kind().clone()))?;
    if n.ip().is_some() {
        return Err(InteractionError::IpAddress);
    }
    Domain::new(n.host()).map_err(|_| InteractionError::NotCanonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalised_and_ips_refused() {
        let mut i = Interactions::default();
        let d = i.define("CRM.Example.COM.", ["a"]).unwrap();
        assert_eq!(d.as_str(), "crm.example.com");
        assert_eq!(i.define("crm.example.com", ["b"]), Err(InteractionError::DuplicateApplication));
        assert_eq!(i.define("10.0.0.5", ["a"]), Err(InteractionError::IpAddress));
        assert_eq!(i.define("[::1]", ["a"]), Err(InteractionError::IpAddress));
        assert!(matches!(i.define("mailto:x@example.com", ["a"]), Err(InteractionError::Host(_))));
        assert_eq!(i.len(), 1);
    }

    #[test]
    fn action_lists_are_bounded_and_checked() {
        let mut i = Interactions::default();
        assert_eq!(i.define("a.example", Vec::<String>::new()), Err(InteractionError::NoActions));
        assert_eq!(
            i.define("a.example", ["ok", "not ok"]),
            Err(InteractionError::ActionName { position: 2 })
        );
        assert_eq!(i.define("a.example", ["x", "x"]), Err(InteractionError::DuplicateAction { position: 2 }));
        let long = "a".repeat(MAX_ACTION_LEN + 1);
        assert_eq!(i.define("a.example", [long.as_str()]), Err(InteractionError::ActionName { position: 1 }));
        let many: Vec<String> = (0..=MAX_INTERACTION_ACTIONS).map(|n| format!("a{n}")).collect();
        assert_eq!(
            i.define("a.example", &many),
            Err(InteractionError::TooManyActions { count: MAX_INTERACTION_ACTIONS + 1 })
        );
        assert!(i.is_empty(), "a refused definition defines nothing");
        i.define("a.example", &many[..MAX_INTERACTION_ACTIONS]).unwrap();
        assert!(i.allows(&Domain::new("a.example").unwrap(), "a0"));
        assert!(!i.allows(&Domain::new("a.example").unwrap(), "A0"), "names are case-sensitive");
    }

    #[test]
    fn applications_are_bounded() {
        let mut i = Interactions::default();
        for n in 0..MAX_INTERACTION_APPLICATIONS {
            i.define(&format!("app{n}.example"), ["a"]).unwrap();
        }
        assert_eq!(i.define("one-more.example", ["a"]), Err(InteractionError::TooManyApplications));
    }

    #[test]
    fn errors_never_repeat_the_input() {
        let mut i = Interactions::default();
        let canary = "CANARYxyz";
        for host in [format!("{canary}@@"), format!("mailto:{canary}"), format!("http://{canary}!/")] {
            if let Err(e) = i.define(&host, ["a"]) {
                assert!(!e.to_string().contains(canary), "{e}");
                assert!(!format!("{e:?}").contains(canary), "{e:?}");
            }
        }
        let e = i.define("ok.example", [format!("{canary} ")]).unwrap_err();
        assert!(!e.to_string().contains(canary), "{e}");
    }
}
