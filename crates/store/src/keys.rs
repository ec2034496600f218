//! Per-customer data keys (envelope encryption): a [`MasterKey`] wraps the
//! data keys a [`KeyStore`] keeps in a file of its own, beside the engine
//! (never inside it: the engine's file and its backups hold no key). Each
//! customer's rows are sealed under the customer's current data key; a
//! data key is destroyed at contract end, and with it everything sealed
//! under it. docs/CUSTOMER-KEYS.md describes the scheme, rotation,
//! re-sealing, destruction and the backups' bound.
//!
//! # The key-store file (format 1)
//!
//! JSON, written whole to a temporary file, synced and renamed over the old
//! one (atomic): `{"format": "privtel-key-store", "format_version": 1,
//! "master_key_id", "next_key_id", "salt", "tombstones": [{"digest",
//! "deleted_at"}], "keys": [{"id", "customer", "created", "state",
//! "wrapped"}]}`. `state` is `"current"`, `"retired"` or `"destroyed"` (no
//! `wrapped` then); `wrapped` is hex of the 12-byte nonce, the AES-256-GCM
//! ciphertext of the 32-byte data key and its tag, under the master key,
//! with additional data binding it to the key id, the master's id and the
//! customer. `tombstones` are keyed digests (BLAKE3 under `salt`) of the
//! customers deleted at contract end, never their ids.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use aes_gcm::aead::rand_core::RngCore as _;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use privtel_model::{CustomerId, KeyId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::codec::{AtRestKey, random_nonce};
use crate::error::{Error, Result};

/// Data-key ids start here, so they never meet the id of an [`AtRestKey`]
/// an operator chose for the single key of earlier versions (rows sealed
/// under it still read): ids below are never issued.
pub const FIRST_DATA_KEY_ID: u32 = 1 << 28;

/// The largest key-store file read: far above any real one (a key entry is
/// about 200 bytes), low enough that a corrupt file cannot exhaust memory.
pub const MAX_KEY_STORE_BYTES: u64 = 64 << 20;

/// The longest [`KeyStoreOptions::backup_retention`] allowed: 30 days.
pub const MAX_BACKUP_RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

const FORMAT: &str = "privtel-key-store";
const FORMAT_VERSION: u32 = 1;
const NONCE_LEN: usize = 12;

/// The key that wraps every data key of a [`KeyStore`]: 32 secret bytes
/// kept outside the engine and the key store (a file readable by its owner
/// only, or an environment variable). Its [`KeyId`] is a fingerprint of the
/// secret (32 bits of a BLAKE3 key derivation), so the key store can say
/// which master it needs without holding it. `Debug` never shows the secret.
///
/// ```
/// use privtel_store::MasterKey;
///
/// let hex = "00".repeat(32);
/// let key = MasterKey::from_hex(&hex)?;
/// assert_eq!(key, MasterKey::new([0; 32]));
/// assert!(!format!("{key:?}").contains(&hex));
/// assert!(MasterKey::from_hex("12").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    id: KeyId,
    secret: [u8; 32],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, <secret>)", self.id)
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.secret.fill(0);
        std::hint::black_box(&self.secret);
    }
}

impl MasterKey {
    /// A master key from its 32 secret bytes.
    pub fn new(secret: [u8; 32]) -> Self {
        let d = blake3::derive_key("privtel-store 2026-12 master key id v1", &secret);
        Self { id: KeyId::new(u32::from_le_bytes([d[0], d[1], d[2], d[3]])), secret }
    }

    /// A fresh master key from the operating system's randomness.
    pub fn generate() -> Self {
        let mut s = [0; 32];
        OsRng.fill_bytes(&mut s);
        Self::new(s)
    }

    /// The key's id (a fingerprint of the secret).
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// A master key from 64 hex digits (surrounding white space ignored).
    ///
    /// # Errors
    ///
    /// [`Error::MasterKey`] when the text is not 64 hex digits (the message
    /// names no digit of it).
    pub fn from_hex(text: &str) -> Result<Self> {
        let text = text.trim();
        let bytes = decode_hex(text).filter(|b| b.len() == 32).ok_or_else(|| Error::MasterKey {
            reason: format!("{} characters that are not a key, expected 64 hex digits", text.len()),
        })?;
        let mut s = [0; 32];
        s.copy_from_slice(&bytes);
        Ok(Self::new(s))
    }

    /// The master key in the environment variable `var` (64 hex digits).
    ///
    /// # Errors
    ///
    /// [`Error::MasterKey`] when the variable is not set, not Unicode, or
    /// not 64 hex digits.
    pub fn from_env(var: &str) -> Result<Self> {
        let value = std::env::var(var).map_err(|e| Error::MasterKey {
            reason: match e {
                std::env::VarError::NotPresent => format!("{var} is not set, expected 64 hex digits"),
                std::env::VarError::NotUnicode(_) => format!("{var} is not text, expected 64 hex digits"),
            },
        })?;
        Self::from_hex(&value)
    }

    /// The master key in the file at `path` (64 hex digits), refused if its
    /// group or others may read or write it (Unix).
    ///
    /// # Errors
    ///
    /// [`Error::MasterKey`] for a file that cannot be read, is open to its
    /// group or others, or does not hold 64 hex digits (the message names
    /// neither the path nor the content).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = fs::metadata(path)
            .map_err(|e| Error::MasterKey { reason: format!("the key file cannot be read: {e}") })?;
        check_private(&meta)?;
        if meta.len() > 4096 {
            return Err(Error::MasterKey {
                reason: format!("the key file holds {} bytes, expected 64 hex digits", meta.len()),
            });
        }
        let text = fs::read_to_string(path)
            .map_err(|e| Error::MasterKey { reason: format!("the key file cannot be read: {e}") })?;
        Self::from_hex(&text)
    }

    /// [`MasterKey::load`], or when no file exists, a new key from the
    /// operating system's randomness written there with mode 0600 (created
    /// exclusively and synced).
    ///
    /// ```
    /// use privtel_store::MasterKey;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("master.key");
    /// let made = MasterKey::load_or_create(&path)?;
    /// assert_eq!(MasterKey::load(&path)?, made);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`MasterKey::load`]; [`Error::MasterKey`] when the file cannot be
    /// created.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.exists() {
            return Self::load(path);
        }
        let key = Self::generate();
        let mut file = private_file(path, true)
            .map_err(|e| Error::MasterKey { reason: format!("the key file cannot be created: {e}") })?;
        file.write_all(format!("{}\n", encode_hex(&key.secret)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::MasterKey { reason: format!("the key file cannot be written: {e}") })?;
        sync_parent(path);
        Ok(key)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.secret.into())
    }
}

#[cfg(unix)]
fn check_private(meta: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::MasterKey {
            reason: format!(
                "the key file has mode {mode:04o}, expected 0600 (no access for group or others)"
            ),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &fs::Metadata) -> Result<()> {
    Ok(())
}

/// A file opened for writing with mode 0600 (Unix); `exclusive`: it must
/// not exist yet.
fn private_file(path: &Path, exclusive: bool) -> std::io::Result<fs::File> {
    let mut o = fs::OpenOptions::new();
    o.write(true);
    if exclusive {
        o.create_new(true);
    } else {
        o.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    o.open(path)
}

fn sync_parent(path: &Path) {
    // Best effort: the rename is durable once the folder is synced.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = fs::File::open(dir).and_then(|d| d.sync_all());
    }
}

/// A data key's state. The names are the file format's.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyState {
    /// New rows of its customer are sealed under it (one per customer).
    Current,
    /// Replaced by a newer key; rows sealed under it still read until they
    /// are re-sealed and it is destroyed.
    Retired,
    /// Gone: what was sealed under it cannot be opened.
    Destroyed,
}

/// What the key store says about one data key (no secret).
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The key's id (never reused, unique across customers).
    pub id: KeyId,
    /// When it was made.
    pub created: Timestamp,
    /// Its state.
    pub state: KeyState,
}

/// How a [`KeyStore`] keeps its backups.
///
/// ```
/// use privtel_store::KeyStoreOptions;
///
/// let o = KeyStoreOptions::default().backup_retention(std::time::Duration::from_secs(2 * 86_400));
/// assert_eq!(o.retention().as_secs(), 2 * 86_400);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KeyStoreOptions {
    backup_retention: std::time::Duration,
}

impl Default for KeyStoreOptions {
    fn default() -> Self {
        Self { backup_retention: std::time::Duration::from_secs(7 * 86_400) }
    }
}

impl KeyStoreOptions {
    /// How long a backup copy of the key-store file is kept (default 7
    /// days; [`KeyStore::open`] refuses more than [`MAX_BACKUP_RETENTION`]):
    /// the longest a destroyed key can survive in the backups of a key store
    /// that is not changed again (every change prunes them).
    #[must_use]
    pub fn backup_retention(mut self, d: std::time::Duration) -> Self {
        self.backup_retention = d;
        self
    }

    /// The backup retention.
    pub fn retention(&self) -> std::time::Duration {
        self.backup_retention
    }
}

/// The file as stored (format 1).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    format_version: u32,
    master_key_id: u32,
    next_key_id: u32,
    salt: String,
    #[serde(default)]
    tombstones: Vec<Tombstone>,
    keys: Vec<Entry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tombstone {
    digest: String,
    deleted_at: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: u32,
    customer: CustomerId,
    created: Timestamp,
    state: KeyState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped: Option<String>,
}

/// The additional data a wrapped key is bound to.
fn aad(id: u32, master: KeyId, customer: &str) -> Vec<u8> {
    let mut a = b"privtel-key-store v1".to_vec();
    a.extend_from_slice(&id.to_le_bytes());
    a.extend_from_slice(&master.get().to_le_bytes());
    a.extend_from_slice(customer.as_bytes());
    a
}

fn wrap(master: &MasterKey, id: u32, customer: &str, key: &[u8; 32]) -> Result<String> {
    let nonce = random_nonce();
    let sealed = master
        .cipher()
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: key, aad: &aad(id, master.id, customer) })
        .map_err(|_| Error::KeyStore { reason: "wrapping a data key failed".into() })?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(encode_hex(&out))
}

fn unwrap_key(master: &MasterKey, id: u32, customer: &str, wrapped: &str) -> Result<[u8; 32]> {
    let bad = || Error::KeyStore {
        reason: format!(
            "data key k{id} does not open under master key {}: wrong key or corrupted file",
            master.id
        ),
    };
    let bytes = decode_hex(wrapped).filter(|b| b.len() == NONCE_LEN + 32 + 16).ok_or_else(bad)?;
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let plain = master
        .cipher()
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &aad(id, master.id, customer) })
        .map_err(|_| bad())?;
    let mut k = [0; 32];
    k.copy_from_slice(&plain);
    Ok(k)
}

/// Parses a key-store file (format 1), checking its structure (not the
/// master key): for [`KeyStore::open`], the backups and the fuzz target.
///
/// # Errors
///
/// [`Error::KeyStore`] for bytes that are not a key-store file of a format
/// this version reads (the reason names no value of it).
fn parse(bytes: &[u8]) -> Result<File> {
    if bytes.len() as u64 > MAX_KEY_STORE_BYTES {
        return Err(Error::KeyStore {
            reason: format!("{} bytes, expected at most {MAX_KEY_STORE_BYTES}", bytes.len()),
        });
    }
    let file: File = serde_json::from_slice(bytes).map_err(|e| Error::KeyStore {
        reason: format!("{:?} json error at line {} column {}", e.classify(), e.line(), e.column())
            .to_lowercase(),
    })?;
    if file.format != FORMAT {
        return Err(Error::KeyStore {
            reason: format!("not a key-store file, expected format \"{FORMAT}\""),
        });
    }
    if file.format_version != FORMAT_VERSION {
        return Err(Error::KeyStore {
            reason: format!("format version {}, expected {FORMAT_VERSION}", file.format_version),
        });
    }
    if decode_hex(&file.salt).is_none_or(|s| s.len() != 32) {
        return Err(Error::KeyStore { reason: "the salt is not 64 hex digits".into() });
    }
    let mut ids = std::collections::HashSet::new();
    let mut current = std::collections::HashSet::new();
    for e in &file.keys {
        if e.id < FIRST_DATA_KEY_ID || e.id >= file.next_key_id || !ids.insert(e.id) {
            return Err(Error::KeyStore {
                reason: format!(
                    "key id {} is out of range or repeated, expected unique ids below the next id",
                    e.id
                ),
            });
        }
        if (e.state == KeyState::Destroyed) != e.wrapped.is_none() {
            return Err(Error::KeyStore {
                reason: format!("key k{} in state {:?} with the wrong wrapped bytes", e.id, e.state)
                    .to_lowercase(),
            });
        }
        if e.state == KeyState::Current && !current.insert(e.customer.as_str()) {
            return Err(Error::KeyStore { reason: "a customer with two current keys, expected one".into() });
        }
    }
    Ok(file)
}

/// Checks bytes as a key-store file, for the fuzz target.
#[doc(hidden)]
pub fn fuzz_parse(bytes: &[u8]) -> Result<()> {
    parse(bytes).map(drop)
}

/// The state behind the lock.
struct State {
    master: MasterKey,
    file: File,
    salt: [u8; 32],
    /// Unwrapped data keys by id (current and retired).
    keys: HashMap<u32, AtRestKey>,
    /// Each customer's current key id.
    current: HashMap<String, u32>,
}

/// Each customer's data keys, wrapped under a [`MasterKey`], in a file of
/// its own (see the module's documentation for the format) with rotated
/// backup copies beside it (`<file>.backups/`). Unwrapped keys live only in
/// memory. Shared between the engine and its encoders (`Arc<KeyStore>`);
/// every change is one atomic write of the whole file. `Debug` shows no key.
///
/// ```
/// use privtel_store::{CustomerId, KeyState, KeyStore, KeyStoreOptions, MasterKey};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("keys.json");
/// let keys = KeyStore::open(&path, MasterKey::new([1; 32]), KeyStoreOptions::default())?;
/// let acme = CustomerId::new("acme")?;
/// let first = keys.current(&acme)?.id();
/// let second = keys.rotate_customer_key(&acme)?;
/// assert_ne!(first, second);
/// assert_eq!(keys.keys_of(&acme)?.iter().map(|k| k.state).collect::<Vec<_>>(), [KeyState::Retired, KeyState::Current]);
/// // A new master re-wraps every key; the old one no longer opens the store.
/// keys.rotate_master(MasterKey::new([2; 32]))?;
/// assert!(KeyStore::open(&path, MasterKey::new([1; 32]), KeyStoreOptions::default()).is_err());
/// let again = KeyStore::open(&path, MasterKey::new([2; 32]), KeyStoreOptions::default())?;
/// assert_eq!(again.current(&acme)?.id(), second);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyStore {
    path: PathBuf,
    options: KeyStoreOptions,
    state: RwLock<State>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.read().map(|s| s.keys.len()).unwrap_or(0);
        f.debug_struct("KeyStore").field("open_keys", &n).finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Opens the key store at `path` (created empty, mode 0600, when there
    /// is no file), unwrapping every key that is not destroyed with `master`.
    ///
    /// # Errors
    ///
    /// [`Error::MasterKeyMismatch`] when the file was written under another
    /// master key (it names the id expected); [`Error::KeyStore`] for a file
    /// that does not parse, a key that does not open, or a backup retention
    /// above [`MAX_BACKUP_RETENTION`]; [`Error::KeyStoreIo`] when the file
    /// cannot be read or written.
    pub fn open(path: impl AsRef<Path>, master: MasterKey, options: KeyStoreOptions) -> Result<Self> {
        if options.backup_retention > MAX_BACKUP_RETENTION {
            return Err(Error::KeyStore {
                reason: format!(
                    "backup retention of {} s, expected at most {} s (30 days)",
                    options.backup_retention.as_secs(),
                    MAX_BACKUP_RETENTION.as_secs()
                ),
            });
        }
        let path = path.as_ref().to_path_buf();
        // A copy left by a write that crashed after the rename: its keys
        // may include destroyed ones.
        let old = sibling(&path, ".old");
        if old.exists() && path.exists() {
            overwrite_and_remove(&old)?;
        }
        let store = match fs::read(&path) {
            Ok(bytes) => {
                let file = parse(&bytes)?;
                if file.master_key_id != master.id.get() {
                    return Err(Error::MasterKeyMismatch {
                        expected: KeyId::new(file.master_key_id),
                        given: master.id,
                    });
                }
                let state = State::unwrap_all(master, file)?;
                Self { path, options, state: RwLock::new(state) }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut salt = [0; 32];
                OsRng.fill_bytes(&mut salt);
                let file = File {
                    format: FORMAT.into(),
                    format_version: FORMAT_VERSION,
                    master_key_id: master.id.get(),
                    next_key_id: FIRST_DATA_KEY_ID,
                    salt: encode_hex(&salt),
                    tombstones: Vec::new(),
                    keys: Vec::new(),
                };
                let state = State::unwrap_all(master, file)?;
                let store = Self { path, options, state: RwLock::new(state) };
                store.persist(&store.read()?.file)?;
                store
            }
            Err(e) => return Err(Error::KeyStoreIo(e)),
        };
        Ok(store)
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, State>> {
        self.state.read().map_err(|_| Error::KeyStore { reason: "the key store's lock is poisoned".into() })
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, State>> {
        self.state.write().map_err(|_| Error::KeyStore { reason: "the key store's lock is poisoned".into() })
    }

    /// The master key's id the store is wrapped under.
    pub fn master_id(&self) -> Result<KeyId> {
        Ok(self.read()?.master.id)
    }

    /// The customer's current data key, made (and written) on first use.
    ///
    /// # Errors
    ///
    /// [`Error::CustomerDeleted`] for a customer deleted at contract end
    /// and not re-onboarded; a write error.
    pub fn current(&self, customer: &CustomerId) -> Result<AtRestKey> {
        {
            let s = self.read()?;
            if let Some(k) = s.current.get(customer.as_str()).and_then(|id| s.keys.get(id)) {
                return Ok(k.clone());
            }
        }
        let mut s = self.write()?;
        if let Some(k) = s.current.get(customer.as_str()).and_then(|id| s.keys.get(id)) {
            return Ok(k.clone());
        }
        if s.is_deleted(customer) {
            return Err(Error::CustomerDeleted);
        }
        let (mut file, id, key) = s.with_new_key(customer)?;
        std::mem::swap(&mut s.file, &mut file);
        if let Err(e) = self.persist(&s.file) {
            s.file = file;
            return Err(e);
        }
        s.adopt(customer, id, key);
        Ok(s.keys[&id].clone())
    }

    /// The data key `id`, if the store holds it open: `Ok(None)` for an id
    /// below [`FIRST_DATA_KEY_ID`] (not a data key).
    ///
    /// # Errors
    ///
    /// [`Error::KeyDestroyed`] (with `row` as the row id) for a data key
    /// that was destroyed, or that this store never issued.
    pub fn key(&self, id: u32, row: i64) -> Result<Option<AtRestKey>> {
        if id < FIRST_DATA_KEY_ID {
            return Ok(None);
        }
        match self.read()?.keys.get(&id) {
            Some(k) => Ok(Some(k.clone())),
            None => Err(Error::KeyDestroyed { id: row, key_id: id }),
        }
    }

    /// The customer's keys (current, retired and destroyed ones still
    /// listed), oldest first.
    ///
    /// # Errors
    ///
    /// A poisoned lock.
    pub fn keys_of(&self, customer: &CustomerId) -> Result<Vec<KeyInfo>> {
        Ok(self
            .read()?
            .file
            .keys
            .iter()
            .filter(|e| e.customer == *customer)
            .map(|e| KeyInfo { id: KeyId::new(e.id), created: e.created, state: e.state })
            .collect())
    }

    /// Makes a new current key for the customer; the old one is retired
    /// (rows sealed under it still read; see `SqliteEngine::reseal`).
    ///
    /// # Errors
    ///
    /// [`Error::CustomerDeleted`]; a write error (nothing changes then).
    pub fn rotate_customer_key(&self, customer: &CustomerId) -> Result<KeyId> {
        let mut s = self.write()?;
        if s.is_deleted(customer) {
            return Err(Error::CustomerDeleted);
        }
        let (mut file, id, key) = s.with_new_key(customer)?;
        for e in &mut file.keys {
            if e.customer == *customer && e.state == KeyState::Current && e.id != id {
                e.state = KeyState::Retired;
            }
        }
        std::mem::swap(&mut s.file, &mut file);
        if let Err(e) = self.persist(&s.file) {
            s.file = file;
            return Err(e);
        }
        s.adopt(customer, id, key);
        Ok(KeyId::new(id))
    }

    /// Re-wraps every data key under `new_master` in one atomic write of the
    /// file; no row changes. From then on only `new_master` opens the store
    /// (backups written before keep the master of their time).
    ///
    /// # Errors
    ///
    /// A write error (the store stays under the old master then).
    pub fn rotate_master(&self, new_master: MasterKey) -> Result<()> {
        let mut s = self.write()?;
        let mut file = s.file.clone();
        for e in &mut file.keys {
            if e.wrapped.is_some() {
                let key = s.secret_of(e.id, e.customer.as_str())?;
                e.wrapped = Some(wrap(&new_master, e.id, e.customer.as_str(), &key)?);
            }
        }
        file.master_key_id = new_master.id.get();
        self.persist(&file)?;
        s.file = file;
        s.master = new_master;
        Ok(())
    }

    /// Destroys a retired key: its entry stays (state destroyed, no key
    /// bytes) in the file, and every backup holding it is rewritten
    /// without it. The caller checks that no row is sealed under it
    /// (`SqliteEngine::destroy_retired_keys` does).
    ///
    /// # Errors
    ///
    /// [`Error::KeyStore`] for a key that is not retired (a current key is
    /// destroyed only with its customer); a write error.
    pub fn destroy_retired(&self, id: KeyId) -> Result<()> {
        let mut s = self.write()?;
        let mut file = s.file.clone();
        let entry =
            file.keys.iter_mut().find(|e| e.id == id.get() && e.state == KeyState::Retired).ok_or_else(
                || Error::KeyStore { reason: format!("key {id} is not a retired key, expected one") },
            )?;
        entry.state = KeyState::Destroyed;
        entry.wrapped = None;
        self.persist_destroying(&file, |b| {
            for e in &mut b.keys {
                if e.id == id.get() {
                    e.state = KeyState::Destroyed;
                    e.wrapped = None;
                }
            }
        })?;
        s.file = file;
        s.keys.remove(&id.get());
        Ok(())
    }

    /// Contract end, step one: erases every key of the customer from the
    /// file (the entries go; their ids are never issued again) and from
    /// every backup, and remembers the customer as a tombstone digest so no
    /// key is made for it again until [`KeyStore::reonboard`]. Returns the
    /// ids destroyed.
    ///
    /// # Errors
    ///
    /// A write error: the file then still holds the keys (the backups may
    /// already be rewritten without them).
    pub fn destroy_customer(&self, customer: &CustomerId, now: Timestamp) -> Result<Vec<KeyId>> {
        let mut s = self.write()?;
        let mut file = s.file.clone();
        let ids: Vec<u32> = file.keys.iter().filter(|e| e.customer == *customer).map(|e| e.id).collect();
        file.keys.retain(|e| e.customer != *customer);
        let digest = encode_hex(&s.tombstone(customer));
        if !file.tombstones.iter().any(|t| t.digest == digest) {
            file.tombstones.push(Tombstone { digest, deleted_at: now });
        }
        self.persist_destroying(&file, |b| b.keys.retain(|e| e.customer != *customer))?;
        s.file = file;
        for id in &ids {
            s.keys.remove(id);
        }
        s.current.remove(customer.as_str());
        Ok(ids.into_iter().map(KeyId::new).collect())
    }

    /// Whether the customer was deleted at contract end (and not
    /// re-onboarded).
    ///
    /// # Errors
    ///
    /// A poisoned lock.
    pub fn is_deleted(&self, customer: &CustomerId) -> Result<bool> {
        Ok(self.read()?.is_deleted(customer))
    }

    /// Forgets the customer's tombstone: keys are made for it again.
    ///
    /// # Errors
    ///
    /// A write error.
    pub fn reonboard(&self, customer: &CustomerId) -> Result<()> {
        let mut s = self.write()?;
        let digest = encode_hex(&s.tombstone(customer));
        let mut file = s.file.clone();
        file.tombstones.retain(|t| t.digest != digest);
        self.persist(&file)?;
        s.file = file;
        Ok(())
    }

    /// The backup copies now on disk (paths), oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::KeyStoreIo`] when the folder cannot be listed.
    pub fn backups(&self) -> Result<Vec<PathBuf>> {
        Ok(self.list_backups()?.into_iter().map(|(_, p)| p).collect())
    }

    /// Deletes the backups made before `now` minus the retention; returns
    /// how many went. Every change calls it with the clock's time.
    ///
    /// # Errors
    ///
    /// [`Error::KeyStoreIo`].
    pub fn prune_backups(&self, now: Timestamp) -> Result<usize> {
        let bound = now.unix_nanos() - self.options.backup_retention.as_nanos() as i128;
        let mut n = 0;
        for (at, p) in self.list_backups()? {
            if at < bound {
                overwrite_and_remove(&p)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn backup_dir(&self) -> PathBuf {
        let mut d = self.path.clone().into_os_string();
        d.push(".backups");
        PathBuf::from(d)
    }

    /// (made at, unix ns; path) of every backup.
    fn list_backups(&self) -> Result<Vec<(i128, PathBuf)>> {
        let dir = self.backup_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::KeyStoreIo(e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(Error::KeyStoreIo)?;
            let name = e.file_name();
            let Some(at) = name
                .to_str()
                .and_then(|n| n.strip_prefix("keys-"))
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<i128>().ok())
            else {
                continue;
            };
            out.push((at, e.path()));
        }
        out.sort();
        Ok(out)
    }

    /// Writes `file` atomically, then a backup copy of it, then prunes old
    /// backups.
    fn persist(&self, file: &File) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(file).map_err(|e| Error::KeyStore { reason: e.to_string() })?;
        write_atomic(&self.path, &bytes)?;
        let dir = self.backup_dir();
        fs::create_dir_all(&dir).map_err(Error::KeyStoreIo)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(Error::KeyStoreIo)?;
        }
        let now = Timestamp::now();
        let mut at = now.unix_nanos();
        // Two changes in one clock tick get two copies.
        while dir.join(format!("keys-{at}.json")).exists() {
            at += 1;
        }
        write_atomic(&dir.join(format!("keys-{at}.json")), &bytes)?;
        self.prune_backups(now)?;
        Ok(())
    }

    /// [`KeyStore::persist`] after rewriting every backup with `scrub`
    /// (which removes a destroyed key): first the backups, so that when the
    /// main file no longer holds the key no copy does.
    fn persist_destroying(&self, file: &File, scrub: impl Fn(&mut File)) -> Result<()> {
        for (_, p) in self.list_backups()? {
            let bytes = fs::read(&p).map_err(Error::KeyStoreIo)?;
            let Ok(mut b) = parse(&bytes) else {
                // A copy this version cannot read cannot be scrubbed: gone.
                overwrite_and_remove(&p)?;
                continue;
            };
            let before =
                serde_json::to_vec_pretty(&b).map_err(|e| Error::KeyStore { reason: e.to_string() })?;
            scrub(&mut b);
            let out = serde_json::to_vec_pretty(&b).map_err(|e| Error::KeyStore { reason: e.to_string() })?;
            if out != before {
                // Only the copies that held the key are rewritten.
                write_atomic(&p, &out)?;
            }
        }
        self.persist(file)
    }
}

fn overwrite_in_place(p: &Path, len: usize) -> Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(p).map_err(Error::KeyStoreIo)?;
    f.write_all(&vec![0; len]).and_then(|()| f.sync_all()).map_err(Error::KeyStoreIo)
}

fn overwrite_and_remove(p: &Path) -> Result<()> {
    let len = fs::metadata(p).map_err(Error::KeyStoreIo)?.len();
    overwrite_in_place(p, usize::try_from(len).unwrap_or(0))?;
    fs::remove_file(p).map_err(Error::KeyStoreIo)
}

/// Writes `bytes` to a temporary file beside `path` (mode 0600), syncs it,
/// renames it over `path` and syncs the folder; the old file (kept under a
/// second name until the new one is in place, so a crash loses neither) is
/// then overwritten with zeros and removed.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = sibling(path, ".tmp");
    let old = sibling(path, ".old");
    let mut f = private_file(&tmp, false).map_err(Error::KeyStoreIo)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(Error::KeyStoreIo)?;
    drop(f);
    if old.exists() {
        overwrite_and_remove(&old)?;
    }
    let had_old = match fs::hard_link(path, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::KeyStoreIo(e)),
    };
    fs::rename(&tmp, path).map_err(Error::KeyStoreIo)?;
    sync_parent(path);
    if had_old {
        overwrite_and_remove(&old)?;
    }
    Ok(())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.to_path_buf().into_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

impl State {
    fn unwrap_all(master: MasterKey, file: File) -> Result<Self> {
        let mut salt = [0; 32];
        salt.copy_from_slice(&decode_hex(&file.salt).unwrap_or_default()[..32]);
        let mut keys = HashMap::new();
        let mut current = HashMap::new();
        for e in &file.keys {
            if let Some(w) = &e.wrapped {
                let k = unwrap_key(&master, e.id, e.customer.as_str(), w)?;
                keys.insert(e.id, AtRestKey::new(e.id, k));
                if e.state == KeyState::Current {
                    current.insert(e.customer.as_str().to_owned(), e.id);
                }
            }
        }
        // The secrets are re-derived from the file when needed (rotation).
        Ok(Self { master, file, salt, keys, current })
    }

    fn tombstone(&self, customer: &CustomerId) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.salt);
        h.update(b"customer tombstone v1\0");
        h.update(customer.as_str().as_bytes());
        *h.finalize().as_bytes()
    }

    fn is_deleted(&self, customer: &CustomerId) -> bool {
        let d = encode_hex(&self.tombstone(customer));
        self.file.tombstones.iter().any(|t| t.digest == d)
    }

    /// The file with a new current key for `customer` (not yet adopted).
    fn with_new_key(&self, customer: &CustomerId) -> Result<(File, u32, [u8; 32])> {
        let mut file = self.file.clone();
        let id = file.next_key_id;
        file.next_key_id = id.checked_add(1).ok_or_else(|| Error::KeyStore {
            reason: "every data-key id was used, expected a free one".into(),
        })?;
        let mut key = [0; 32];
        OsRng.fill_bytes(&mut key);
        file.keys.push(Entry {
            id,
            customer: customer.clone(),
            created: Timestamp::now(),
            state: KeyState::Current,
            wrapped: Some(wrap(&self.master, id, customer.as_str(), &key)?),
        });
        Ok((file, id, key))
    }

    fn adopt(&mut self, customer: &CustomerId, id: u32, mut key: [u8; 32]) {
        self.keys.insert(id, AtRestKey::new(id, key));
        key.fill(0);
        self.current.insert(customer.as_str().to_owned(), id);
    }

    /// A key's secret, unwrapped again from the file (the open ciphers do
    /// not give it back).
    fn secret_of(&self, id: u32, customer: &str) -> Result<[u8; 32]> {
        let e = self.file.keys.iter().find(|e| e.id == id).and_then(|e| e.wrapped.as_deref()).ok_or_else(
            || Error::KeyStore { reason: format!("key k{id} has no wrapped bytes, expected a live key") },
        )?;
        unwrap_key(&self.master, id, customer, e)
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            Some((d(p[0])? * 16 + d(p[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_non_hex() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(decode_hex(&encode_hex(&b)).unwrap(), b);
        assert!(decode_hex("0g").is_none());
        assert!(decode_hex("abc").is_none());
    }

    #[test]
    fn parse_refuses_what_is_not_a_key_store() {
        assert!(parse(b"{}").unwrap_err().to_string().contains("json error"));
        let bad =
            br#"{"format":"x","format_version":1,"master_key_id":1,"next_key_id":1,"salt":"","keys":[]}"#;
        assert!(parse(bad).unwrap_err().to_string().contains("not a key-store file"));
    }
}
