//! Who holds the service's connections: each device and each customer
//! once a certificate (or the embedding program) says who is connected,
//! and each network address while its TLS handshakes are in progress.
//! Caps on these keep one tenant, one copied key or one host from taking
//! the connections everyone else needs (`Limits::max_per_device`,
//! `CustomerSettings::max_connections`, `Limits::max_handshakes`,
//! `Limits::max_handshakes_per_address`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use privtel_model::{CustomerId, DeviceId};

/// Connections held by each device and each customer.
#[derive(Debug, Default)]
pub(crate) struct Occupancy {
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    devices: HashMap<(CustomerId, DeviceId), u32>,
    customers: HashMap<CustomerId, u32>,
}

/// Why a connection was not given a seat: the cap it met and how many
/// connections hold seats under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// The device's own cap.
    Device { open: u32, max: u32 },
    /// The customer's cap.
    Customer { open: u32, max: u32 },
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Device { open, max } => {
                write!(f, "the device has {open} connections open, expected at most {max}")
            }
            Self::Customer { open, max } => {
                write!(f, "the customer's devices have {open} connections open, expected at most {max}")
            }
        }
    }
}

impl Occupancy {
    /// A seat for one connection of `device` of `customer`, if the device
    /// holds fewer than `per_device` and the customer fewer than
    /// `per_customer` (if any) connections; given back when dropped.
    pub(crate) fn enter(
        &self,
        customer: &CustomerId,
        device: &DeviceId,
        per_device: u32,
        per_customer: Option<u32>,
    ) -> Result<Seat<'_>, Full> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (customer.clone(), device.clone());
        let device_open = held.devices.get(&key).copied().unwrap_or(0);
        if device_open >= per_device {
            return Err(Full::Device { open: device_open, max: per_device });
        }
        let customer_open = held.customers.get(customer).copied().unwrap_or(0);
        if let Some(max) = per_customer
            && customer_open >= max
        {
            return Err(Full::Customer { open: customer_open, max });
        }
        *held.devices.entry(key.clone()).or_default() += 1;
        *held.customers.entry(customer.clone()).or_default() += 1;
        Ok(Seat { occupancy: self, key })
    }

    /// Connections `customer`'s devices hold now.
    pub(crate) fn customer(&self, customer: &CustomerId) -> u32 {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.customers.get(customer).copied().unwrap_or(0)
    }

    /// Devices and customers with a seat held now (their entries go with
    /// their last seat: the maps hold only what is connected).
    #[cfg(test)]
    fn entries(&self) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        (held.devices.len(), held.customers.len())
    }
}

/// One connection's seat ([`Occupancy::enter`]).
#[derive(Debug)]
pub(crate) struct Seat<'a> {
    occupancy: &'a Occupancy,
    key: (CustomerId, DeviceId),
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let mut held = self.occupancy.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.devices.release(&self.key);
        held.customers.release(&self.key.0);
    }
}

/// Takes one from a count, removing the entry at zero.
trait Release<K> {
    fn release(&mut self, key: &K);
}

impl<K: std::hash::Hash + Eq> Release<K> for HashMap<K, u32> {
    fn release(&mut self, key: &K) {
        if let Some(n) = self.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.remove(key);
            }
        }
    }
}

/// TLS handshakes in progress, in all and by network address.
#[derive(Debug)]
pub(crate) struct Handshakes {
    max: usize,
    per_address: u32,
    held: Mutex<(usize, HashMap<IpAddr, u32>)>,
}

/// Why a handshake was not begun.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Busy {
    /// As many handshakes from every address together as allowed.
    All(usize),
    /// As many from this address (or its IPv6 /64) as allowed.
    Address(u32),
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All(n) => write!(f, "{n} handshakes in progress, the most allowed"),
            Self::Address(n) => write!(f, "{n} handshakes in progress from one address, the most allowed"),
        }
    }
}

/// The address a handshake counts under: an IPv4 address (or an IPv4
/// address mapped into IPv6) as it is, an IPv6 address by its /64
/// network.
pub(crate) fn counted_as(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(net.into())
        }
    }
}

impl Handshakes {
    pub(crate) fn new(max: usize, per_address: u32) -> Arc<Self> {
        Arc::new(Self { max, per_address, held: Mutex::default() })
    }

    /// A handshake slot for a connection from `addr`, given back when
    /// dropped.
    pub(crate) fn begin(self: &Arc<Self>, addr: IpAddr) -> Result<Handshake, Busy> {
        let addr = counted_as(addr);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (all, by_address) = &mut *held;
        if *all >= self.max {
            return Err(Busy::All(*all));
        }
        let mine = by_address.entry(addr).or_default();
        if *mine >= self.per_address {
            return Err(Busy::Address(*mine));
        }
        *mine += 1;
        *all += 1;
        Ok(Handshake { handshakes: Arc::clone(self), addr })
    }

    /// Handshakes in progress now, in all.
    #[cfg(test)]
    fn in_progress(&self) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        (held.0, held.1.len())
    }
}

/// One connection's handshake slot ([`Handshakes::begin`]).
#[derive(Debug)]
pub(crate) struct Handshake {
    handshakes: Arc<Handshakes>,
    addr: IpAddr,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut held = self.handshakes.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (all, by_address) = &mut *held;
        *all = all.saturating_sub(1);
        by_address.release(&self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(c: &str, d: &str) -> (CustomerId, DeviceId) {
        (CustomerId::new(c).unwrap(), DeviceId::new(d).unwrap())
    }

    #[test]
    fn a_device_and_a_customer_hold_at_most_their_caps_and_seats_come_back() {
        let o = Occupancy::default();
        let (acme, d1) = ids("acme", "dev-1");
        let (_, d2) = ids("acme", "dev-2");
        let (globex, g1) = ids("globex", "dev-1");
        let a = o.enter(&acme, &d1, 2, Some(3)).unwrap();
        let b = o.enter(&acme, &d1, 2, Some(3)).unwrap();
        assert_eq!(o.enter(&acme, &d1, 2, Some(3)).unwrap_err(), Full::Device { open: 2, max: 2 });
        let c = o.enter(&acme, &d2, 2, Some(3)).unwrap();
        assert_eq!(o.enter(&acme, &d2, 2, Some(3)).unwrap_err(), Full::Customer { open: 3, max: 3 });
        // The same device id of another customer is another device, and
        // that customer has no cap of its own.
        let others: Vec<_> = (0..5).map(|_| o.enter(&globex, &g1, 5, None).unwrap()).collect();
        assert_eq!(o.customer(&acme), 3);
        drop(a);
        let again = o.enter(&acme, &d1, 2, Some(3)).unwrap();
        drop((b, c, again, others));
        assert_eq!(o.entries(), (0, 0), "nothing is kept for devices gone");
        assert_eq!(o.customer(&acme), 0);
    }

    #[test]
    fn handshakes_are_capped_in_all_and_by_address_and_ipv6_counts_by_its_64() {
        let h = Handshakes::new(4, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let x = h.begin(a).unwrap();
        let y = h.begin(mapped).unwrap();
        assert_eq!(h.begin(a).unwrap_err(), Busy::Address(2), "a mapped address is the same host");
        let v6a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let z = h.begin(v6a).unwrap();
        let w = h.begin(v6b).unwrap();
        assert_eq!(h.begin("2001:db8:1:3::1".parse().unwrap()).unwrap_err(), Busy::All(4));
        assert_eq!(h.begin(v6b).unwrap_err(), Busy::All(4), "the cap in all comes first");
        drop(x);
        assert_eq!(h.begin(v6b).unwrap_err(), Busy::Address(2), "both v6 addresses are one /64");
        let other_net = h.begin("2001:db8:1:3::1".parse().unwrap()).unwrap();
        drop((y, z, w, other_net));
        assert_eq!(h.in_progress(), (0, 0));
    }
}
