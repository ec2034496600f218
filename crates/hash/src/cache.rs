//! A cache of digests keyed by what identifies one version of a file
//! (device, inode, size, modification and change times), so a second scan of
//! an unchanged tree only stats files.

use std::collections::HashMap;
use std::fs;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use privtel_model::ExecutableFormat;
use serde::{Deserialize, Serialize};

use crate::digest::Digests;
use crate::error::{Error, Result};
use crate::file::FileIdentity;

/// First bytes of a cache file.
const MAGIC: &[u8; 8] = b"PTHCACHE";
/// Version of the layout after the magic; bump it when `Entry` changes.
const VERSION: u16 = 1;
/// The largest cache file loaded: about ten million files. A larger file is
/// not something this crate wrote, and reading it would only waste memory.
pub const MAX_CACHE_FILE: u64 = 1 << 30;
/// bincode's limit when decoding a cache, the same bound as the file size.
const DECODE_LIMIT: usize = 1 << 30;

/// What the cache remembers about one version of a file.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) digests: Digests,
    pub(crate) format: Option<ExecutableFormat>,
}

/// The key: the file's identity, and on systems without inode numbers its
/// path as well.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub(crate) struct Key {
    pub(crate) identity: FileIdentity,
    #[cfg(not(unix))]
    pub(crate) path: std::path::PathBuf,
}

/// A fast hasher for cache keys. Keys are inode numbers and times of the
/// device's own files, not input an attacker chooses freely, so the
/// flooding resistance of SipHash buys nothing here, and lookups are a
/// noticeable part of a cached scan.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // FxHash's step: rotate, mix in, multiply by an odd constant.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Digests of files already hashed, keyed by (device, inode, size, mtime,
/// ctime). Any change to a file changes its key, so a stale entry is never
/// used: it is only left behind, and [`HashCache::prune`] drops the entries
/// the latest scan did not use.
///
/// ```
/// use privtel_hash::{HashCache, ScanHooks, ScannerBuilder};
///
/// let dir = std::env::temp_dir().join(format!("privtel-cache-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// std::fs::write(dir.join("a"), b"a")?;
/// let scanner = ScannerBuilder::new().build();
/// let mut cache = HashCache::new();
/// let first = scanner.scan_with(&[&dir], ScanHooks { cache: Some(&mut cache), ..ScanHooks::default() });
/// let second = scanner.scan_with(&[&dir], ScanHooks { cache: Some(&mut cache), ..ScanHooks::default() });
/// assert!(!first.hashed[0].from_cache && second.hashed[0].from_cache);
/// cache.save(&dir.join("cache.bin"))?;
/// assert_eq!(HashCache::load(&dir.join("cache.bin"))?.len(), 1);
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct HashCache {
    entries: Entries,
    /// Whether the entries differ from the file they were loaded from (or
    /// were never saved), so an unchanged cache is not rewritten.
    dirty: bool,
}

/// An entry and whether the latest scan used it. The flag is atomic so that
/// the scan's workers, which share the cache, mark hits as they find them
/// (no second pass over every hit after the scan).
#[derive(Debug)]
struct Slot {
    entry: Entry,
    used: AtomicBool,
}

impl Slot {
    fn new(entry: Entry, used: bool) -> Self {
        Self { entry, used: AtomicBool::new(used) }
    }

    fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }
}

impl Clone for Slot {
    fn clone(&self) -> Self {
        Self::new(self.entry.clone(), self.used())
    }
}

impl HashCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many file versions the cache holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of `key`, and a handle that marks it used; an entry the
    /// caller looks at but does not use (a digest it lacks) stays unused.
    pub(crate) fn get(&self, key: &Key) -> Option<(&Entry, Hit<'_>)> {
        self.entries.get(key).map(|slot| (&slot.entry, Hit(&slot.used)))
    }

    /// Records `entry` (a file just hashed) and marks it used.
    pub(crate) fn put(&mut self, key: Key, entry: Entry) {
        match self.entries.get_mut(&key) {
            Some(slot) if slot.entry == entry => *slot.used.get_mut() = true,
            _ => {
                self.entries.insert(key, Slot::new(entry, true));
                self.dirty = true;
            }
        }
    }

    /// Hashes the one file at `path` (a symbolic link is followed, so
    /// `/proc/PID/exe` names a running program's file even when it was
    /// deleted) unless this cache holds digests of its current version:
    /// then the file is only stat'ed. The digests are recorded in the
    /// cache and the entry marked used, as a scan would.
    ///
    /// ```
    /// use privtel_hash::{FileOptions, HashCache};
    ///
    /// let dir = std::env::temp_dir().join(format!("privtel-cache-file-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// std::fs::write(dir.join("tool"), b"#!/bin/sh\n")?;
    /// let mut cache = HashCache::new();
    /// let first = cache.hash_file(dir.join("tool"), &FileOptions::default())?;
    /// let second = cache.hash_file(dir.join("tool"), &FileOptions::default())?;
    /// assert!(!first.from_cache && second.from_cache);
    /// assert_eq!(first.digests, second.digests);
    /// std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::File`] with the [`SkipReason`](crate::SkipReason) when the
    /// file is not hashed (gone, unreadable, not a regular file, changed
    /// while read, or skipped under `options`).
    pub fn hash_file(
        &mut self,
        path: impl AsRef<Path>,
        options: &crate::FileOptions,
    ) -> Result<crate::HashedFile> {
        use crate::error::SkipReason;
        let path = path.as_ref();
        let fail = |reason| Error::File { path: path.to_owned(), reason };
        let meta = fs::metadata(path).map_err(|e| fail(SkipReason::from_open_error(e)))?;
        let stat = crate::file::Stat::of(&meta);
        if !stat.regular {
            return Err(fail(SkipReason::NotRegular));
        }
        let key = Key {
            identity: stat.identity,
            #[cfg(not(unix))]
            path: path.to_owned(),
        };
        if let Some((entry, hit)) = self.get(&key) {
            let too_large = options.max_size.is_some_and(|limit| stat.size() > limit);
            let skip = options.executables_only && entry.format.is_none();
            if !too_large && !skip && options.algorithms.satisfied_by(&entry.digests) {
                hit.mark();
                return Ok(crate::HashedFile {
                    path: path.to_owned(),
                    size: stat.size(),
                    modified: stat.modified,
                    digests: entry.digests,
                    format: entry.format.clone(),
                    from_cache: true,
                });
            }
        }
        let (hashed, identity) =
            crate::file::hash_file_inner(path, options, Some(&stat), None).map_err(fail)?;
        let entry = Entry { digests: hashed.digests, format: hashed.format.clone() };
        self.put(
            Key {
                identity,
                #[cfg(not(unix))]
                path: path.to_owned(),
            },
            entry,
        );
        Ok(crate::HashedFile { path: path.to_owned(), ..hashed })
    }

    /// Whether the cache changed since it was loaded or saved.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Marks every entry unused; a scan calls this before it starts.
    pub(crate) fn start_scan(&mut self) {
        self.entries.values_mut().for_each(|slot| *slot.used.get_mut() = false);
    }

    /// Drops every entry the latest scan with this cache did not use (files
    /// deleted or changed since). Prune after a scan that covered every root
    /// the cache serves, or entries for the other roots go too.
    pub fn prune(&mut self) {
        let before = self.entries.len();
        self.entries.retain(|_, slot| slot.used());
        self.dirty |= self.entries.len() != before;
    }

    /// Writes the cache to `path` (through a temporary file and a rename, so
    /// a crash leaves the old cache or the new one, never half of one).
    ///
    /// # Errors
    ///
    /// [`Error::CacheIo`] if the file cannot be written.
    pub fn save(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |source| Error::CacheIo { path: path.to_owned(), source };
        let entries: Vec<(&Key, &Entry)> = self.entries.iter().map(|(k, slot)| (k, &slot.entry)).collect();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        let body = bincode::serde::encode_to_vec(&entries, bincode::config::standard()).map_err(|e| {
            Error::CacheFormat { path: path.to_owned(), reason: format!("cannot encode: {e}") }
        })?;
        bytes.extend_from_slice(&body);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let mut file = fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)?;
        self.dirty = false;
        Ok(())
    }

    /// Reads a cache written by [`HashCache::save`].
    ///
    /// # Errors
    ///
    /// [`Error::CacheIo`] if the file cannot be read; [`Error::CacheFormat`]
    /// if it is larger than [`MAX_CACHE_FILE`], has the wrong magic or
    /// version, or does not decode.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| Error::CacheIo { path: path.to_owned(), source };
        let len = fs::metadata(path).map_err(io)?.len();
        if len > MAX_CACHE_FILE {
            return Err(Error::CacheFormat {
                path: path.to_owned(),
                reason: format!("{len} bytes is larger than the limit of {MAX_CACHE_FILE} bytes"),
            });
        }
        let bytes = fs::read(path).map_err(io)?;
        Self::from_bytes(&bytes).map_err(|reason| Error::CacheFormat { path: path.to_owned(), reason })
    }

    /// Reads a cache written by [`HashCache::save`], or gives an empty cache
    /// if there is no file at `path` yet (the first scan of a device). Any
    /// other failure is still an error: a cache that exists but cannot be
    /// read or decoded is reported, not silently replaced.
    ///
    /// ```
    /// use privtel_hash::HashCache;
    ///
    /// let path = std::env::temp_dir().join(format!("privtel-no-cache-{}", std::process::id()));
    /// let cache = HashCache::load_or_default(&path)?;
    /// assert!(cache.is_empty());
    /// # Ok::<(), privtel_hash::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`HashCache::load`], except that a missing file is an empty
    /// cache.
    pub fn load_or_default(path: impl AsRef<Path>) -> Result<Self> {
        match Self::load(path) {
            Err(Error::CacheIo { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(Self::default())
            }
            other => other,
        }
    }

    /// Decodes the bytes of a cache file. The reason on failure is meant for
    /// [`Error::CacheFormat`].
    #[doc(hidden)] // Public for the fuzz target only; not a stable API.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or("expected the magic bytes 'PTHCACHE'")?;
        let (version, body) = rest.split_at_checked(2).ok_or("truncated before the version")?;
        let version = u16::from_le_bytes([version[0], version[1]]);
        if version != VERSION {
            return Err(format!("version {version}, expected {VERSION}"));
        }
        let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
        let seed = Loaded { body_len: body.len() };
        let (entries, used) = bincode::serde::seed_decode_from_slice(seed, body, config)
            .map_err(|e| format!("corrupt entries: {e}"))?;
        if used != body.len() {
            return Err(format!("{} unexpected bytes after the entries", body.len() - used));
        }
        Ok(Self { entries, dirty: false })
    }
}

type Entries = HashMap<Key, Slot, BuildHasherDefault<KeyHasher>>;

/// Encoded bytes per entry assumed when sizing the map from a file's claimed
/// entry count: a real entry takes about 100 (two digests), so the map is
/// sized right for real files, while a false claim can reserve no more than
/// a few times the file's own size.
const BYTES_PER_ENTRY_HINT: usize = 64;

/// Decodes the entries of a cache file straight into the map (the file
/// holds a sequence of `(Key, Entry)`; no list of them is built first).
/// Loaded entries count as unused until a scan uses them.
struct Loaded {
    /// Length of the encoded entries, which bounds the map's first size.
    body_len: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Loaded {
    type Value = Entries;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Entries, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Loaded {
    type Value = Entries;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence of cache entries")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Entries, A::Error> {
        let claimed = seq.size_hint().unwrap_or(0).min(self.body_len / BYTES_PER_ENTRY_HINT);
        let mut map = Entries::with_capacity_and_hasher(claimed, BuildHasherDefault::default());
        while let Some((key, entry)) = seq.next_element::<(Key, Entry)>()? {
            map.insert(key, Slot::new(entry, false));
        }
        Ok(map)
    }
}

/// Marks a cache entry as used by the current scan.
pub(crate) struct Hit<'a>(&'a AtomicBool);

impl Hit<'_> {
    pub(crate) fn mark(self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
