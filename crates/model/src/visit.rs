//! The visitor that reaches every personal field of a record without knowing
//! its type ([`VisitPersonal`]), and what it hands out: the field's
//! [`FieldSpec`] and a typed mutable reference to its value ([`PersonalMut`]).

use std::fmt;
use std::net::IpAddr;

use time::Duration;

use crate::generalised::Generalised;
use crate::id::UserId;
use crate::personal::Personal;
use crate::pseudonym::Pseudonym;
use crate::timestamp::Timestamp;
use crate::values::{Geohash, Privileges};
use crate::vocabulary::{FieldSpec, Form, Treatment};

/// A mutable reference to one personal field's value, by its Rust type.
///
/// The filter matches on this to read a clear value and put a pseudonym or a
/// generalised value in its place.
#[non_exhaustive]
pub enum PersonalMut<'a> {
    /// A text value (names, emails, URLs, hosts, paths, free text, …).
    Text(&'a mut Personal<String>),
    /// An IP address.
    Ip(&'a mut Personal<IpAddr>),
    /// An instant.
    Timestamp(&'a mut Personal<Timestamp>),
    /// A duration.
    Duration(&'a mut Personal<Duration>),
    /// A geohash.
    Geohash(&'a mut Personal<Geohash>),
    /// Account privileges.
    Privileges(&'a mut Personal<Privileges>),
    /// The user id an event concerns ([`crate::Event::user`]), or a user
    /// record's id ([`crate::User::id`]; [`UserId::withheld`] is visited as
    /// `None`): `None` is withheld, an id in a pseudonym's text form
    /// ([`UserId::from_pseudonym`]) is pseudonymised, any other id is clear.
    /// It has no generalised form: generalising withholds it.
    UserId(&'a mut Option<UserId>),
}

macro_rules! each_personal {
    ($self:expr, $p:ident => $body:expr, $u:ident => $user:expr) => {
        match $self {
            PersonalMut::Text($p) => $body,
            PersonalMut::Ip($p) => $body,
            PersonalMut::Timestamp($p) => $body,
            PersonalMut::Duration($p) => $body,
            PersonalMut::Geohash($p) => $body,
            PersonalMut::Privileges($p) => $body,
            PersonalMut::UserId($u) => $user,
        }
    };
}

impl PersonalMut<'_> {
    /// The form the value is in now.
    pub fn form(&self) -> Form {
        each_personal!(self, p => p.form(), u => match u {
            None => Form::Withheld,
            Some(id) if id.pseudonym().is_some() => Form::Pseudonym,
            Some(_) => Form::Clear,
        })
    }

    /// The treatment that leaves the value in its form.
    #[deprecated(
        since = "0.1.0",
        note = "a value has a form, not a treatment: use `form()` (or `form().treatment()`)"
    )]
    pub fn treatment(&self) -> Treatment {
        self.form().treatment()
    }

    /// Removes the value, leaving [`Personal::Withheld`] (no user id).
    pub fn withhold(&mut self) {
        each_personal!(self, p => **p = Personal::Withheld, u => **u = None)
    }

    /// Replaces the value with a pseudonym.
    pub fn set_pseudonym(&mut self, ps: Pseudonym) {
        each_personal!(self, p => **p = Personal::Pseudonym(ps), u => **u = Some(UserId::from_pseudonym(&ps)))
    }

    /// Replaces the value with a generalised one (a user id, which has no
    /// coarser form, is withheld instead).
    pub fn set_generalised(&mut self, g: Generalised) {
        each_personal!(self, p => **p = Personal::Generalised(g), u => **u = None)
    }

    /// The current pseudonym, if the field holds one.
    pub fn pseudonym(&self) -> Option<Pseudonym> {
        each_personal!(
            self,
            p => match p { Personal::Pseudonym(ps) => Some(*ps), _ => None },
            u => u.as_ref().and_then(UserId::pseudonym)
        )
    }
}

impl fmt::Debug for PersonalMut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        each_personal!(self, p => fmt::Debug::fmt(&**p, f), u => match (u.as_ref(), self.pseudonym()) {
            (None, _) => f.write_str("Withheld"),
            (Some(_), Some(ps)) => write!(f, "Pseudonym({ps})"),
            (Some(_), None) => f.write_str("Clear(<redacted>)"),
        })
    }
}

/// One personal field handed to a visitor: what it is, and its value.
#[derive(Debug)]
#[non_exhaustive]
pub struct PersonalField<'a> {
    /// The field's static description (path, category, kind, default).
    pub spec: &'static FieldSpec,
    /// The value, mutable.
    pub value: PersonalMut<'a>,
}

impl<'a> PersonalField<'a> {
    /// Pairs a spec with a value. Crates above the model use this only to
    /// build fields for tests; records build theirs in their visitors.
    pub fn new(spec: &'static FieldSpec, value: PersonalMut<'a>) -> Self {
        Self { spec, value }
    }
}

/// Implemented by every record type: visits each personal field, in a fixed
/// order, whatever form it is in (withheld fields are visited too).
///
/// This is the one way privacy code reaches personal data, so a new personal
/// field that is not visited is a bug the model's tests catch: they compare
/// what the visitor reaches with a table of every field.
pub trait VisitPersonal {
    /// Calls `f` once for each personal field of `self`.
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>));

    /// The specs of the fields `visit_personal` reaches on this value, in
    /// order (a convenience for manifests and tests).
    fn personal_specs(&mut self) -> Vec<&'static FieldSpec> {
        let mut out = Vec::new();
        self.visit_personal(&mut |field| out.push(field.spec));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_clear_or_generalised_values() {
        let canary = "CANARY-4f1c";
        let p: Personal<String> = Personal::Clear(canary.to_owned());
        assert!(!format!("{p:?}").contains(canary));
        assert!(!format!("{p:#?}").contains(canary));
        let g: Personal<String> = Personal::Generalised(Generalised::Text(canary.to_owned()));
        assert!(!format!("{g:?}").contains(canary));
        let mut v = p;
        assert!(!format!("{:?}", PersonalMut::Text(&mut v)).contains(canary));
    }
}
