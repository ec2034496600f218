//! [`Record`]: the unit that is filtered, spooled, sent and stored.

use serde::{Deserialize, Serialize};

use crate::binary::{Application, Binary, Package};
use crate::consent::Consent;
use crate::device::{Device, User};
use crate::event::Event;
use crate::id::{DeviceId, UserId};
use crate::program::Program;
use crate::summary::DeviceSummary;
use crate::verdict::{BinaryVerdict, DomainVerdict};
use crate::visit::{PersonalField, VisitPersonal};

/// One piece of data and the program it is collected for.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The program the record belongs to; consent is checked against it.
    pub program: Program,
    /// The data.
    pub body: RecordBody,
}

impl VisitPersonal for Record {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        self.body.visit_personal(f);
    }
}

/// The data a record carries: an object or an event.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecordBody {
    /// A device's description.
    Device(Device),
    /// A person's identifiers.
    User(User),
    /// A binary seen on a device.
    Binary(Binary),
    /// An installed application.
    Application(Application),
    /// An installed package.
    Package(Package),
    /// A verdict on a binary (service to device).
    BinaryVerdict(BinaryVerdict),
    /// A verdict on a domain (service to device).
    DomainVerdict(DomainVerdict),
    /// Something that happened.
    Event(Event),
    /// A device's benchmarking summary: counts, durations and its Digital
    /// Experience Score for a period; no user, no device id. Appended last:
    /// the binary form numbers variants by position.
    DeviceSummary(DeviceSummary),
    /// A person's consent to an optional program, given or withdrawn, with
    /// its source and time. Appended after `DeviceSummary` for the same
    /// reason.
    Consent(Consent),
}

impl RecordBody {
    /// The snake_case name of the kind (`binary_verdict`; events give their
    /// own kind, `web_request`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Device(_) => "device",
            Self::User(_) => "user",
            Self::Binary(_) => "binary",
            Self::Application(_) => "application",
            Self::Package(_) => "package",
            Self::BinaryVerdict(_) => "binary_verdict",
            Self::DomainVerdict(_) => "domain_verdict",
            Self::Event(e) => e.body.kind_name(),
            Self::DeviceSummary(_) => "device_summary",
            Self::Consent(_) => "consent",
        }
    }

    /// The person the record is about, if any: what erasure looks for. A
    /// user record whose id is withheld ([`UserId::withheld`]) is about no
    /// one.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Self::User(u) => Some(&u.id).filter(|id| !id.is_withheld()),
            Self::Event(e) => e.user.as_ref(),
            Self::Consent(c) => c.user.as_ref(),
            _ => None,
        }
    }

    /// The device the record is about, if any: what the inactivity purge
    /// looks for.
    pub fn device(&self) -> Option<&DeviceId> {
        match self {
            Self::Device(d) => Some(&d.id),
            Self::Event(e) => Some(&e.device),
            Self::Consent(c) => Some(&c.device),
            _ => None,
        }
    }
}

impl VisitPersonal for RecordBody {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        match self {
            Self::Device(d) => d.visit_personal(f),
            Self::User(u) => u.visit_personal(f),
            Self::Binary(b) => b.visit_personal(f),
            Self::Event(e) => e.visit_personal(f),
            Self::Consent(c) => c.visit_personal(f),
            // No personal fields in these types.
            Self::Application(Application { .. })
            | Self::Package(Package { .. })
            | Self::BinaryVerdict(BinaryVerdict { .. })
            | Self::DomainVerdict(DomainVerdict { .. })
            | Self::DeviceSummary(DeviceSummary { .. }) => {}
        }
    }
}
