//! Devices and the people who use them.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::fields;
use crate::id::{DeviceId, UserId};
use crate::personal::Personal;
use crate::timestamp::Timestamp;
use crate::visit::{PersonalField, PersonalMut, VisitPersonal};

/// The operating system family of a device.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OsFamily {
    /// Microsoft Windows.
    Windows,
    /// Apple macOS.
    MacOs,
    /// A Linux distribution.
    Linux,
    /// Apple iOS or iPadOS.
    Ios,
    /// Android.
    Android,
    /// Anything else.
    Other,
}

/// An operating system: family, version and build, as the device reports
/// them (not personal: millions of devices share each value).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct OsInfo {
    /// The family.
    pub family: OsFamily,
    /// The version as the OS prints it (`11`, `14.5`, `Debian 12`).
    pub version: String,
    /// The build or kernel release, where known (`22631.3447`).
    pub build: Option<String>,
}

impl fmt::Display for OsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}", self.family, self.version)?;
        if let Some(b) = &self.build {
            write!(f, " ({b})")?;
        }
        Ok(())
    }
}

/// What sort of machine a device is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeviceType {
    /// A desktop computer.
    Desktop,
    /// A laptop.
    Laptop,
    /// A server.
    Server,
    /// A virtual machine or virtual desktop.
    Virtual,
    /// A phone or tablet.
    Mobile,
    /// Anything else.
    Other,
}

/// A device (endpoint) of a customer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Device {
    /// The device's id.
    pub id: DeviceId,
    /// The host name (`ALICE-LAPTOP`): often names its user, hence personal.
    pub name: Personal<String>,
    /// The operating system.
    pub os: OsInfo,
    /// What sort of machine it is.
    pub device_type: DeviceType,
    /// The CPU model (`AMD EPYC 9R14`).
    pub cpu: String,
    /// The GPU model, if any.
    pub gpu: Option<String>,
    /// The device's primary IP address.
    pub ip: Personal<IpAddr>,
    /// When the device last reported; drives the inactivity purge.
    pub last_seen: Timestamp,
}

impl VisitPersonal for Device {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        f(PersonalField::new(&fields::DEVICE_NAME, PersonalMut::Text(&mut self.name)));
        f(PersonalField::new(&fields::DEVICE_IP, PersonalMut::Ip(&mut self.ip)));
    }
}

/// A person who uses the customer's devices, with their identifiers.
///
/// Every identifier is personal; the id is an opaque key (see
/// [`UserId`]). Which of them leave the device is the customer's choice.
///
/// `Debug` prints the id as a personal value: its form only, as
/// [`crate::Event`]'s does.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The person's opaque id: the personal field `event.username`
    /// ([`fields::EVENT_USERNAME`]), as an event's user is. Clear, the id;
    /// pseudonymised, the pseudonym's text form
    /// ([`UserId::from_pseudonym`]), so the person's record and events are
    /// filed under the same key; dropped, the record cannot exist (a
    /// visitor that withholds it leaves [`UserId::withheld`], which the
    /// filter drops and the service refuses).
    pub id: UserId,
    /// The login name (`alice`, `CORP\alice`).
    pub username: Personal<String>,
    /// The user principal name (`alice@corp.example`).
    pub upn: Personal<String>,
    /// First name.
    pub first_name: Personal<String>,
    /// Last name.
    pub last_name: Personal<String>,
    /// Job title.
    pub job_title: Personal<String>,
    /// Professional email address.
    pub email: Personal<String>,
    /// Professional phone number.
    pub phone: Personal<String>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut id = Some(self.id.clone()).filter(|id| !id.is_withheld());
        f.debug_struct("User")
            .field("id", &PersonalMut::UserId(&mut id))
            .field("username", &self.username)
            .field("upn", &self.upn)
            .field("first_name", &self.first_name)
            .field("last_name", &self.last_name)
            .field("job_title", &self.job_title)
            .field("email", &self.email)
            .field("phone", &self.phone)
            .finish()
    }
}

impl VisitPersonal for User {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        // The id is `event.username`, in the same three forms as an
        // event's user; withheld, the reserved id stands in for `None`.
        let mut id = Some(std::mem::replace(&mut self.id, UserId::withheld())).filter(|id| !id.is_withheld());
        f(PersonalField::new(&fields::EVENT_USERNAME, PersonalMut::UserId(&mut id)));
        if let Some(id) = id {
            self.id = id;
        }
        let text = [
            (&fields::USER_USERNAME, &mut self.username),
            (&fields::USER_UPN, &mut self.upn),
            (&fields::USER_FIRST_NAME, &mut self.first_name),
            (&fields::USER_LAST_NAME, &mut self.last_name),
            (&fields::USER_JOB_TITLE, &mut self.job_title),
            (&fields::USER_EMAIL, &mut self.email),
            (&fields::USER_PHONE, &mut self.phone),
        ];
        for (spec, value) in text {
            f(PersonalField::new(spec, PersonalMut::Text(value)));
        }
    }
}
