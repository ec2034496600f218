//! Private enrichment lookups: hash prefixes up, padded buckets down.
//!
//! The device sends a short prefix of each SHA-256 (of a binary, or of a
//! registrable domain's name); the service answers with every entry it knows
//! in that bucket, padded with dummy entries to a fixed count, so the
//! service learns a bucket and not which binary or domain the device holds,
//! and the answer's size does not tell how many real entries there were.
//! The device keeps the entry whose full digest matches its own.

use std::collections::BTreeMap;

use privtel_model::{BinaryVerdict, Digest, Domain, DomainVerdict, Reputation, ThreatLevel};
use sha2::Digest as _;

use crate::error::QueryError;
use crate::frame::DEFAULT_MAX_PAYLOAD;
use crate::message::{BinaryEntry, Bucket, DomainEntry, EnrichAnswer, EnrichQuery, HashPrefix};

/// Default prefix length in bytes: 65,536 buckets, so a bucket holds many
/// binaries of a large catalogue.
pub const DEFAULT_PREFIX_LEN: usize = 2;
/// Default entries per bucket answer (real and padding).
pub const DEFAULT_PAD_TO: usize = 8;
/// The shortest prefix a [`VerdictIndex`] answers by default (2 bytes:
/// 65,536 buckets). A shorter prefix names a huge bucket (1 byte: 1/256 of
/// the catalogue; none: all of it), so it is refused.
pub const MIN_PREFIX_LEN: usize = 2;
/// The longest prefix: a whole SHA-256.
pub const MAX_PREFIX_LEN: usize = 32;
/// The most binaries, and the most domains, one enrichment query (and so
/// one answer) may hold: a list longer than this is refused while decoding,
/// before it is built, and by [`VerdictIndex::answer`]. An agent with more
/// to ask sends several queries.
pub const MAX_QUERY_ITEMS: usize = 4096;

/// SHA-256 of a registrable domain's name: what private lookups are keyed by.
pub fn domain_digest(domain: &Domain) -> Digest {
    Digest::from_bytes(sha2::Sha256::digest(domain.as_str().as_bytes()).into())
}

/// The first `len` bytes of a digest (1 to 32).
pub fn prefix(digest: &Digest, len: usize) -> HashPrefix {
    HashPrefix(digest.as_bytes()[..len.clamp(1, 32)].to_vec())
}

/// A private query for these binaries and domains.
pub fn private_query(
    query_id: u64,
    binaries: &[Digest],
    domains: &[Domain],
    prefix_len: usize,
) -> EnrichQuery {
    let mut b: Vec<_> = binaries.iter().map(|d| prefix(d, prefix_len)).collect();
    let mut d: Vec<_> = domains.iter().map(|d| prefix(&domain_digest(d), prefix_len)).collect();
    // Sorted and deduplicated: the order would otherwise tell the order of
    // discovery.
    b.sort();
    b.dedup();
    d.sort();
    d.dedup();
    EnrichQuery::Private { query_id, binaries: b, domains: d }
}

/// The service's verdicts, indexed for both kinds of query.
#[derive(Clone, Debug)]
pub struct VerdictIndex {
    binaries: BTreeMap<Digest, BinaryVerdict>,
    domains: BTreeMap<Digest, DomainVerdict>,
    pad_to: usize,
    padding_key: [u8; 32],
    min_prefix_len: usize,
    max_answer: u32,
}

impl Default for VerdictIndex {
    fn default() -> Self {
        Self::new(DEFAULT_PAD_TO, [0; 32])
    }
}

impl VerdictIndex {
    /// An empty index padding buckets to `pad_to` entries. `padding_key`
    /// makes the dummy entries unpredictable to a device (so it cannot tell
    /// them from real ones by recomputing them); keep it secret.
    ///
    /// It answers prefixes of [`MIN_PREFIX_LEN`] to [`MAX_PREFIX_LEN`] bytes,
    /// and answers that fit a frame of [`DEFAULT_MAX_PAYLOAD`] bytes.
    pub fn new(pad_to: usize, padding_key: [u8; 32]) -> Self {
        Self {
            binaries: BTreeMap::new(),
            domains: BTreeMap::new(),
            pad_to: pad_to.max(1),
            padding_key,
            min_prefix_len: MIN_PREFIX_LEN,
            max_answer: DEFAULT_MAX_PAYLOAD,
        }
    }

    /// Answers prefixes of at least `len` bytes (1 to 32; a small catalogue
    /// may allow 1, a large one should ask for more than 2).
    #[must_use]
    pub fn with_min_prefix_len(mut self, len: usize) -> Self {
        self.min_prefix_len = len.clamp(1, MAX_PREFIX_LEN);
        self
    }

    /// Refuses queries whose answer could exceed `max` bytes encoded (the
    /// connection's payload limit; [`DEFAULT_MAX_PAYLOAD`] by default).
    #[must_use]
    pub fn with_max_answer(mut self, max: u32) -> Self {
        self.max_answer = max;
        self
    }

    /// The shortest prefix answered.
    pub fn min_prefix_len(&self) -> usize {
        self.min_prefix_len
    }

    /// Adds or replaces a binary's verdict.
    pub fn add_binary(&mut self, v: BinaryVerdict) {
        self.binaries.insert(v.sha256, v);
    }

    /// Adds or replaces a domain's verdict.
    pub fn add_domain(&mut self, v: DomainVerdict) {
        self.domains.insert(domain_digest(&v.domain), v);
    }

    /// Number of (binary, domain) verdicts held.
    pub fn len(&self) -> (usize, usize) {
        (self.binaries.len(), self.domains.len())
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.binaries.is_empty() && self.domains.is_empty()
    }

    /// The answer to a query (`-` for everything unknown), after the query
    /// passed its bounds, all checked before any answer is built:
    ///
    /// * at most [`MAX_QUERY_ITEMS`] binaries and as many domains;
    /// * every prefix of [`min_prefix_len`](Self::min_prefix_len) to
    ///   [`MAX_PREFIX_LEN`] bytes (an empty or short prefix names a huge
    ///   bucket);
    /// * an upper bound of the answer's encoded size (from the sizes of the
    ///   entries it would hold) within the frame limit
    ///   ([`with_max_answer`](Self::with_max_answer)); the work of computing
    ///   it stops as soon as it passes the limit.
    ///
    /// ```
    /// use privtel_model::Digest;
    /// use privtel_wire::{EnrichAnswer, HashPrefix, EnrichQuery, QueryError, VerdictIndex, private_query};
    ///
    /// let index = VerdictIndex::new(8, [7; 32]);
    /// let query = private_query(1, &[Digest::from_bytes([0xab; 32])], &[], 2);
    /// let EnrichAnswer::Private { binaries, .. } = index.answer(&query)? else { unreachable!() };
    /// assert_eq!(binaries[0].entries.len(), 8);
    ///
    /// let EnrichQuery::Private { query_id, domains, .. } = query else { unreachable!() };
    /// let empty = EnrichQuery::Private { query_id, binaries: vec![HashPrefix(vec![])], domains };
    /// let err = index.answer(&empty).unwrap_err();
    /// assert!(matches!(err, QueryError::PrefixLength { len: 0, .. }));
    /// assert_eq!(err.to_string(), "binaries prefix 0 has 0 bytes: expected 2 to 32");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`QueryError::TooMany`], [`QueryError::PrefixLength`] or
    /// [`QueryError::AnswerTooLarge`].
    pub fn answer(&self, query: &EnrichQuery) -> Result<EnrichAnswer, QueryError> {
        self.check(query)?;
        Ok(match query {
            EnrichQuery::Direct { query_id, binaries, domains } => EnrichAnswer::Direct {
                query_id: *query_id,
                binaries: binaries.iter().map(|d| self.binary_verdict(d)).collect(),
                domains: domains.iter().map(|d| self.domain_verdict(d)).collect(),
            },
            EnrichQuery::Private { query_id, binaries, domains } => EnrichAnswer::Private {
                query_id: *query_id,
                binaries: binaries.iter().map(|p| self.binary_bucket(p)).collect(),
                domains: domains.iter().map(|p| self.domain_bucket(p)).collect(),
            },
        })
    }

    /// The query's bounds: counts, prefix lengths, then the answer's size.
    fn check(&self, query: &EnrichQuery) -> Result<(), QueryError> {
        let (nb, nd) = match query {
            EnrichQuery::Direct { binaries, domains, .. } => (binaries.len(), domains.len()),
            EnrichQuery::Private { binaries, domains, .. } => (binaries.len(), domains.len()),
        };
        for (list, count) in [("binaries", nb), ("domains", nd)] {
            if count > MAX_QUERY_ITEMS {
                return Err(QueryError::TooMany { list, count, max: MAX_QUERY_ITEMS });
            }
        }
        let mut size = Budget::new(self.max_answer);
        // The enum tag, the query id and two list lengths.
        size.add(32)?;
        match query {
            EnrichQuery::Direct { binaries, domains, .. } => {
                for d in binaries {
                    size.add(encoded_len(&self.binary_verdict(d)))?;
                }
                for d in domains {
                    size.add(encoded_len(&self.domain_verdict(d)))?;
                }
            }
            EnrichQuery::Private { binaries, domains, .. } => {
                for (list, prefixes) in [("binaries", binaries), ("domains", domains)] {
                    for (index, p) in prefixes.iter().enumerate() {
                        let len = p.0.len();
                        if !(self.min_prefix_len..=MAX_PREFIX_LEN).contains(&len) {
                            return Err(QueryError::PrefixLength {
                                list,
                                index,
                                len,
                                min: self.min_prefix_len,
                                max: MAX_PREFIX_LEN,
                            });
                        }
                    }
                }
                for p in binaries {
                    self.bucket_size(&self.binaries, p, &mut size, |d, v| {
                        encoded_len(&BinaryEntry {
                            sha256: *d,
                            threat: v.threat,
                            category: v.category.clone(),
                        })
                    })?;
                }
                for p in domains {
                    self.bucket_size(&self.domains, p, &mut size, |d, v| {
                        encoded_len(&DomainEntry {
                            name_sha256: *d,
                            reputation: v.reputation,
                            category: v.category.clone(),
                            hosting_country: v.hosting_country,
                        })
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Adds an upper bound of the encoded size of the bucket `prefix` to
    /// `size`: its prefix, its length, its real entries, and the largest
    /// padding it could get. Stops as soon as the budget is spent.
    fn bucket_size<V>(
        &self,
        map: &BTreeMap<Digest, V>,
        prefix: &HashPrefix,
        size: &mut Budget,
        entry_len: impl Fn(&Digest, &V) -> u64,
    ) -> Result<(), QueryError> {
        // Prefix (length and bytes) and the entry count: at most 1 + 32 + 9.
        size.add(42)?;
        let mut real = 0usize;
        for (d, v) in in_bucket(map, prefix) {
            size.add(entry_len(d, v))?;
            real += 1;
        }
        // Padding: at most `pad_to` dummies, each no larger than an entry
        // with no category and no country (digest, tag, two `None`s).
        let pad = (self.padded_len(real) - real) as u64;
        size.add(pad.saturating_mul(DUMMY_ENTRY_LEN))
    }

    fn binary_verdict(&self, d: &Digest) -> BinaryVerdict {
        self.binaries.get(d).cloned().unwrap_or_else(|| BinaryVerdict::unknown(*d))
    }

    fn domain_verdict(&self, d: &Domain) -> DomainVerdict {
        self.domains.get(&domain_digest(d)).cloned().unwrap_or_else(|| DomainVerdict::unknown(d.clone()))
    }

    /// Dummy digests for bucket `prefix`: keyed, so they look like any
    /// other digest with that prefix.
    fn dummies(&self, prefix: &HashPrefix, kind: u8, n: usize) -> impl Iterator<Item = Digest> + '_ {
        let p = prefix.0.clone();
        (0..n).map(move |i| {
            let mut h = blake3::Hasher::new_keyed(&self.padding_key);
            h.update(&[kind]);
            h.update(&p);
            h.update(&(i as u64).to_le_bytes());
            let mut bytes = *h.finalize().as_bytes();
            bytes[..p.len().min(32)].copy_from_slice(&p[..p.len().min(32)]);
            Digest::from_bytes(bytes)
        })
    }

    fn padded_len(&self, real: usize) -> usize {
        real.div_ceil(self.pad_to).max(1) * self.pad_to
    }

    fn binary_bucket(&self, prefix: &HashPrefix) -> Bucket<BinaryEntry> {
        let mut entries: Vec<BinaryEntry> = in_bucket(&self.binaries, prefix)
            .map(|(d, v)| BinaryEntry { sha256: *d, threat: v.threat, category: v.category.clone() })
            .collect();
        let pad = self.padded_len(entries.len()) - entries.len();
        entries.extend(self.dummies(prefix, 0, pad).map(|sha256| BinaryEntry {
            sha256,
            threat: ThreatLevel::Unknown,
            category: None,
        }));
        entries.sort_by_key(|e| e.sha256);
        Bucket { prefix: prefix.clone(), entries }
    }

    fn domain_bucket(&self, prefix: &HashPrefix) -> Bucket<DomainEntry> {
        let mut entries: Vec<DomainEntry> = in_bucket(&self.domains, prefix)
            .map(|(d, v)| DomainEntry {
                name_sha256: *d,
                reputation: v.reputation,
                category: v.category.clone(),
                hosting_country: v.hosting_country,
            })
            .collect();
        let pad = self.padded_len(entries.len()) - entries.len();
        entries.extend(self.dummies(prefix, 1, pad).map(|name_sha256| DomainEntry {
            name_sha256,
            reputation: Reputation::Unknown,
            category: None,
            hosting_country: None,
        }));
        entries.sort_by_key(|e| e.name_sha256);
        Bucket { prefix: prefix.clone(), entries }
    }
}

/// An upper bound of one padding entry's encoded size: a digest (a length
/// byte and 32 bytes), a verdict tag (at most 5 bytes as a varint) and two
/// absent options; checked by a test against the real encoding.
const DUMMY_ENTRY_LEN: u64 = 1 + 32 + 5 + 1 + 1;

/// What an answer may still take, in bytes.
struct Budget {
    used: u64,
    max: u32,
}

impl Budget {
    fn new(max: u32) -> Self {
        Self { used: 0, max }
    }

    fn add(&mut self, n: u64) -> Result<(), QueryError> {
        self.used = self.used.saturating_add(n);
        if self.used > u64::from(self.max) {
            return Err(QueryError::AnswerTooLarge { bound: self.used, max: self.max });
        }
        Ok(())
    }
}

/// The encoded size of `value` in a payload (as `Message::encode_payload`
/// writes it).
fn encoded_len<T: serde::Serialize>(value: &T) -> u64 {
    let mut w = bincode::enc::write::SizeWriter::default();
    // Encoding into a size counter fails only past the configured limit;
    // count that as too large.
    match bincode::serde::encode_into_writer(value, &mut w, crate::message::config()) {
        Ok(()) => w.bytes_written as u64,
        Err(_) => u64::MAX,
    }
}

fn in_bucket<'a, V>(
    map: &'a BTreeMap<Digest, V>,
    prefix: &'a HashPrefix,
) -> impl Iterator<Item = (&'a Digest, &'a V)> + 'a {
    let mut lo = [0u8; 32];
    let n = prefix.0.len().min(32);
    lo[..n].copy_from_slice(&prefix.0[..n]);
    map.range(Digest::from_bytes(lo)..).take_while(move |(d, _)| d.as_bytes().starts_with(&prefix.0))
}

/// Reads a reputation file (the service's verdicts): one verdict a line,
/// `kind,key,verdict,category,hosting_country`, where kind is `binary`
/// (key: SHA-256, verdict: threat level) or `domain` (key: registrable
/// domain, verdict: reputation); `-` or empty is unknown. Blank lines and
/// lines starting with `#` are skipped.
///
/// ```
/// let (b, d) = privtel_wire::parse_reputation("binary,e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855,high,malware,\ndomain,example.com,trustworthy,reference,US\n")?;
/// assert_eq!((b.len(), d.len()), (1, 1));
/// let err = privtel_wire::parse_reputation("# header\ndomain,example.com,safe,,\n").unwrap_err();
/// assert_eq!(err.to_string(), "reputation file line 2: invalid reputation 'safe': expected one of 'trustworthy', 'low risk', 'moderate risk', 'high risk' or '-'");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`crate::Error::Reputation`] naming the line and the bad value.
pub fn parse_reputation(text: &str) -> crate::Result<(Vec<BinaryVerdict>, Vec<DomainVerdict>)> {
    let mut binaries = Vec::new();
    let mut domains = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let bad = |message: String| crate::Error::Reputation { line, message };
        let cols: Vec<&str> = raw.split(',').map(str::trim).collect();
        if cols.len() != 5 {
            return Err(bad(format!(
                "{} columns, expected 5 (kind,key,verdict,category,hosting_country)",
                cols.len()
            )));
        }
        let opt = |s: &str| (!s.is_empty() && s != "-").then(|| s.to_owned());
        let category =
            opt(cols[3]).map(privtel_model::Category::new).transpose().map_err(|e| bad(e.to_string()))?;
        match cols[0] {
            "binary" => binaries.push(BinaryVerdict {
                sha256: cols[1].parse().map_err(|e: privtel_model::Error| bad(e.to_string()))?,
                threat: cols[2].parse().map_err(|e: privtel_model::Error| bad(e.to_string()))?,
                category,
            }),
            "domain" => domains.push(DomainVerdict {
                domain: cols[1].parse().map_err(|e: privtel_model::Error| bad(e.to_string()))?,
                reputation: cols[2].parse().map_err(|e: privtel_model::Error| bad(e.to_string()))?,
                category,
                hosting_country: opt(cols[4])
                    .map(|c| c.parse())
                    .transpose()
                    .map_err(|e: privtel_model::Error| bad(e.to_string()))?,
            }),
            other => return Err(bad(format!("kind '{other}': expected 'binary' or 'domain'"))),
        }
    }
    Ok((binaries, domains))
}

/// The verdicts for the device's own binaries and domains in an answer:
/// from a direct answer as they are, from a private one by full-digest
/// match; `-` for anything not found.
pub fn verdicts_for(
    answer: &EnrichAnswer,
    binaries: &[Digest],
    domains: &[Domain],
) -> (Vec<BinaryVerdict>, Vec<DomainVerdict>) {
    match answer {
        EnrichAnswer::Direct { binaries: b, domains: d, .. } => (
            binaries
                .iter()
                .map(|x| {
                    b.iter().find(|v| v.sha256 == *x).cloned().unwrap_or_else(|| BinaryVerdict::unknown(*x))
                })
                .collect(),
            domains
                .iter()
                .map(|x| {
                    d.iter()
                        .find(|v| v.domain == *x)
                        .cloned()
                        .unwrap_or_else(|| DomainVerdict::unknown(x.clone()))
                })
                .collect(),
        ),
        EnrichAnswer::Private { binaries: b, domains: d, .. } => (
            binaries
                .iter()
                .map(|x| {
                    b.iter()
                        .flat_map(|bucket| &bucket.entries)
                        .find(|e| e.sha256 == *x)
                        .map(|e| BinaryVerdict { sha256: *x, threat: e.threat, category: e.category.clone() })
                        .unwrap_or_else(|| BinaryVerdict::unknown(*x))
                })
                .collect(),
            domains
                .iter()
                .map(|x| {
                    let h = domain_digest(x);
                    d.iter()
                        .flat_map(|bucket| &bucket.entries)
                        .find(|e| e.name_sha256 == h)
                        .map(|e| DomainVerdict {
                            domain: x.clone(),
                            reputation: e.reputation,
                            category: e.category.clone(),
                            hosting_country: e.hosting_country,
                        })
                        .unwrap_or_else(|| DomainVerdict::unknown(x.clone()))
                })
                .collect(),
        ),
    }
}
