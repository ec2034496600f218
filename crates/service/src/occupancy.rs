//! Who holds the service's connections: each device and each customer
//! once a certificate (or the embedding program) says who is connected,
//! and each network address while its TLS handshakes are in progress.
//! Caps on these keep one tenant, one copied key or one host from taking
//! the connections everyone else needs (`Limits::max_per_device`,
//! `CustomerSettings::max_connections`, `Limits::max_handshakes`,
//! `Limits::max_handshakes_per_address`).

use std::collections::HashMap;
#[cfg(feature = "tls")]
use std::net::IpAddr;
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};

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

/// A network a handshake counts under: its address and prefix length.
#[cfg(feature = "tls")]
type Network = (IpAddr, u8);

/// TLS handshakes in progress, in all and by network address.
#[cfg(feature = "tls")]
#[derive(Debug)]
pub(crate) struct Handshakes {
    max: usize,
    per_address: u32,
    held: Mutex<(usize, HashMap<Network, u32>)>,
}

/// Why a handshake was not begun.
#[cfg(feature = "tls")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Busy {
    /// As many handshakes from every address together as allowed.
    All(usize),
    /// As many from this address (or its IPv6 /64, /56 or /48) as
    /// allowed.
    Address(u32),
}

#[cfg(feature = "tls")]
impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All(n) => write!(f, "{n} handshakes in progress, the most allowed"),
            Self::Address(n) => {
                write!(f, "{n} handshakes in progress from one address or network, the most allowed")
            }
        }
    }
}

/// The networks a handshake from `addr` counts under, each with the
/// multiple of the per-address cap it may hold: an IPv4 address (or one
/// mapped into IPv6) as it is; an IPv6 address by its /64 (one host, as a
/// rule), and also by its /56 (twice the cap) and its /48 (four times),
/// so that a host holding a whole allocation of /64s (a home's /56, a
/// site's /48) still takes a bounded share.
#[cfg(feature = "tls")]
pub(crate) fn counted_as(addr: IpAddr) -> Vec<(IpAddr, u8, u32)> {
    match addr.to_canonical() {
        IpAddr::V4(v4) => vec![(IpAddr::V4(v4), 32, 1)],
        IpAddr::V6(v6) => [(64u8, 1u32), (56, 2), (48, 4)]
            .into_iter()
            .map(|(bits, times)| {
                let net = u128::from(v6) & (u128::MAX << (128 - u32::from(bits)));
                (IpAddr::V6(net.into()), bits, times)
            })
            .collect(),
    }
}

#[cfg(feature = "tls")]
impl Handshakes {
    pub(crate) fn new(max: usize, per_address: u32) -> Arc<Self> {
        Arc::new(Self { max, per_address, held: Mutex::default() })
    }

    /// A handshake slot for a connection from `addr`, given back when
    /// dropped.
    pub(crate) fn begin(self: &Arc<Self>, addr: IpAddr) -> Result<Handshake, Busy> {
        let networks = counted_as(addr);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (all, by_network) = &mut *held;
        let mut narrowest = None;
        for (net, bits, times) in &networks {
            let mine = by_network.get(&(*net, *bits)).copied().unwrap_or(0);
            narrowest.get_or_insert(mine);
            if mine >= self.per_address.saturating_mul(*times) {
                return Err(Busy::Address(mine));
            }
        }
        // At the cap in all, an address holding a few slots already waits;
        // one holding fewer starts (the flood is bounded by the per-address
        // shares and `max_connections`, and cannot lock a new host out).
        let few = (self.per_address / 16).max(1);
        if *all >= self.max && narrowest.unwrap_or(0) >= few {
            return Err(Busy::All(*all));
        }
        for (net, bits, _) in &networks {
            *by_network.entry((*net, *bits)).or_default() += 1;
        }
        *all += 1;
        let networks = networks.into_iter().map(|(net, bits, _)| (net, bits)).collect();
        Ok(Handshake { handshakes: Arc::clone(self), networks, in_all: true })
    }

    /// Handshakes in progress now, in all.
    #[cfg(test)]
    fn in_progress(&self) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        (held.0, held.1.len())
    }
}

/// One connection's handshake slot ([`Handshakes::begin`]).
#[cfg(feature = "tls")]
#[derive(Debug)]
pub(crate) struct Handshake {
    handshakes: Arc<Handshakes>,
    networks: Vec<Network>,
    /// Whether it still counts among the handshakes in progress.
    in_all: bool,
}

#[cfg(feature = "tls")]
impl Handshake {
    /// Leaves the count of handshakes in progress (the handshake is over)
    /// and keeps the address's share.
    pub(crate) fn leave_all(&mut self) {
        if std::mem::take(&mut self.in_all) {
            let mut held = self.handshakes.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.0 = held.0.saturating_sub(1);
        }
    }
}

#[cfg(feature = "tls")]
impl Drop for Handshake {
    fn drop(&mut self) {
        let mut held = self.handshakes.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (all, by_network) = &mut *held;
        if self.in_all {
            *all = all.saturating_sub(1);
        }
        for net in &self.networks {
            by_network.release(net);
        }
    }
}

/// One of the connections without a certificate served at once
/// ([`Limits::max_enrolling`](crate::Limits::max_enrolling)), given back
/// when dropped.
#[cfg(feature = "tls")]
#[derive(Debug)]
pub(crate) struct Enrolling<'a>(&'a std::sync::atomic::AtomicUsize);

#[cfg(feature = "tls")]
impl<'a> Enrolling<'a> {
    /// A place among at most `max` counted by `count`, if one is free.
    pub(crate) fn enter(count: &'a std::sync::atomic::AtomicUsize, max: usize) -> Option<Self> {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        count.fetch_update(AcqRel, Acquire, |n| (n < max).then_some(n + 1)).ok().map(|_| Self(count))
    }
}

#[cfg(feature = "tls")]
impl Drop for Enrolling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
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

    #[cfg(feature = "tls")]
    #[test]
    fn handshakes_are_capped_in_all_and_by_address_and_ipv6_counts_by_its_64() {
        // By address: 2 each; a mapped IPv4 address is the same host; two
        // IPv6 addresses of one /64 are one host (its /56 and /48 allow 4
        // and 8: the /64 is the one met).
        let h = Handshakes::new(100, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let x = (h.begin(a).unwrap(), h.begin(mapped).unwrap());
        assert_eq!(h.begin(a).unwrap_err(), Busy::Address(2), "a mapped address is the same host");
        let v6a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let y = (h.begin(v6a).unwrap(), h.begin(v6b).unwrap());
        assert_eq!(h.begin(v6b).unwrap_err(), Busy::Address(2), "both v6 addresses are one /64");
        let other_net = h.begin("2001:db8:1:3::1".parse().unwrap()).unwrap();
        drop((x, y, other_net));
        assert_eq!(h.in_progress(), (0, 0));
    }

    /// At the cap in all, an address that holds a few slots waits, and a
    /// new host's first handshakes still start: a few flooding hosts
    /// cannot shut every device out. A stranger through TLS leaves the
    /// count in all and keeps its address's share.
    #[cfg(feature = "tls")]
    #[test]
    fn at_the_cap_in_all_a_new_host_still_starts_and_a_stranger_leaves_the_count() {
        let h = Handshakes::new(4, 32); // "a few": 32 / 16 = 2
        let flooder: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "198.51.100.7".parse().unwrap();
        let held: Vec<_> =
            [flooder, flooder, other, other].into_iter().map(|a| h.begin(a).unwrap()).collect();
        assert_eq!(h.begin(flooder).unwrap_err(), Busy::All(4));
        let newcomer: IpAddr = "203.0.113.9".parse().unwrap();
        let first = h.begin(newcomer).unwrap();
        let second = h.begin(newcomer).unwrap();
        assert_eq!(h.begin(newcomer).unwrap_err(), Busy::All(6), "then it holds a few and waits too");
        // Through TLS without a certificate: out of the count in all.
        let mut stranger = first;
        stranger.leave_all();
        assert_eq!(h.in_progress().0, 5);
        assert_eq!(h.begin(newcomer).unwrap_err(), Busy::All(5), "its address's share is still held");
        drop((held, second));
        assert_eq!(h.in_progress(), (0, 1));
        drop(stranger);
        assert_eq!(h.in_progress(), (0, 0));
    }
}

#[cfg(all(test, feature = "tls"))]
mod networks {
    use super::*;

    /// A host holding a whole /56 (256 /64s) or /48 takes at most 2 or 4
    /// times one address's share, and another network is still served.
    #[test]
    fn an_ipv6_allocation_of_many_64s_takes_a_bounded_share() {
        let h = Handshakes::new(1_024, 64);
        let mut held = Vec::new();
        let mut refused = 0;
        for sub in 0..=255u16 {
            for host in 1..=64u16 {
                let addr: IpAddr = format!("2001:db8:0:{sub:x}::{host:x}").parse().unwrap();
                match h.begin(addr) {
                    Ok(slot) => held.push(slot),
                    Err(Busy::Address(_)) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // The /56 2001:db8:0:0-ff holds 128 (twice 64); its /48 would allow 256.
        assert_eq!(held.len(), 128);
        assert_eq!(refused, 256 * 64 - 128);
        // Another /48 is served.
        held.push(h.begin("2001:db8:1::1".parse().unwrap()).unwrap());
        // Across several /56 of one /48: at most four times the share.
        for net in 1..=8u16 {
            for host in 1..=64u16 {
                if let Ok(slot) = h.begin(format!("2001:db8:0:{:x}::{host:x}", net * 256).parse().unwrap()) {
                    held.push(slot);
                }
            }
        }
        assert_eq!(held.len(), 256 + 1, "the /48 2001:db8:0 holds four times the share");
        drop(held);
        assert_eq!(h.in_progress(), (0, 0));
    }
}
