//! Hashes files and folders (recursively), printing lines that `sha256sum`
//! and `b3sum` would print for the same files.
//!
//! ```text
//! cargo run --release --example hash -- [--alg sha256|blake3|both] [--executables-only]
//!     [--cache FILE] [--max-size BYTES] [--mmap-threshold BYTES] [--threads N]
//!     [--follow-symlinks] [--stats] [--verbose] PATH...
//! ```
//!
//! * `--alg sha256` prints `<sha256 hex>  <path>` (as `sha256sum`), `--alg
//!   blake3` prints `<blake3 hex>  <path>` (as `b3sum`), `--alg both` (the
//!   default) prints `<sha256 hex>  <blake3 hex>  <path>`. A path holding a
//!   backslash or newline is escaped and its line starts with `\`, as both
//!   tools do.
//! * Files that could not be hashed go to stderr with the reason and make the
//!   exit status 1. Files skipped by choice (not executables under
//!   `--executables-only`, links not followed) are only listed with
//!   `--verbose`.
//! * `--cache FILE` loads the cache if it exists and saves it afterwards.
//! * `--stats` prints files, bytes, seconds and GB/s to stderr.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use privtel::hash::{Algorithms, HashCache, ScanHooks, ScannerBuilder, SkipReason};

struct Args {
    alg: Algorithms,
    executables_only: bool,
    cache: Option<PathBuf>,
    max_size: Option<u64>,
    mmap_threshold: Option<u64>,
    threads: usize,
    follow: bool,
    stats: bool,
    verbose: bool,
    paths: Vec<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        alg: Algorithms::Both,
        executables_only: false,
        cache: None,
        max_size: None,
        mmap_threshold: None,
        threads: 0,
        follow: false,
        stats: false,
        verbose: false,
        paths: Vec::new(),
    };
    let mut it = std::env::args_os().skip(1);
    let value = |it: &mut dyn Iterator<Item = std::ffi::OsString>, flag: &str| {
        it.next().with_context(|| format!("{flag} needs a value"))
    };
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--alg") => {
                args.alg = match value(&mut it, "--alg")?.to_str() {
                    Some("sha256") => Algorithms::Sha256,
                    Some("blake3") => Algorithms::Blake3,
                    Some("both") => Algorithms::Both,
                    other => bail!("--alg takes sha256, blake3 or both, not {other:?}"),
                }
            }
            Some("--executables-only") => args.executables_only = true,
            Some("--follow-symlinks") => args.follow = true,
            Some("--stats") => args.stats = true,
            Some("--verbose") => args.verbose = true,
            Some("--cache") => args.cache = Some(value(&mut it, "--cache")?.into()),
            Some(flag @ ("--max-size" | "--mmap-threshold" | "--threads")) => {
                let v = value(&mut it, flag)?;
                let n: u64 = v
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .with_context(|| format!("{flag} takes a whole number, not {}", v.to_string_lossy()))?;
                match flag {
                    "--max-size" => args.max_size = Some(n),
                    "--mmap-threshold" => args.mmap_threshold = Some(n),
                    _ => args.threads = usize::try_from(n)?,
                }
            }
            Some("--") => args.paths.extend(it.by_ref().map(PathBuf::from)),
            Some(s) if s.starts_with("--") => bail!("unknown option {s}"),
            _ => args.paths.push(arg.into()),
        }
    }
    if args.paths.is_empty() {
        bail!("usage: hash [--alg sha256|blake3|both] [--executables-only] [--cache FILE] PATH...");
    }
    Ok(args)
}

/// The path as `sha256sum`/`b3sum` print it, and whether the line needs the
/// leading backslash that marks escapes.
fn escaped(path: &Path) -> (bool, Vec<u8>) {
    #[cfg(unix)]
    let raw = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let raw = path.to_string_lossy().into_owned().into_bytes();
    if !raw.iter().any(|&b| b == b'\\' || b == b'\n') {
        return (false, raw);
    }
    let mut out = Vec::with_capacity(raw.len() + 4);
    for b in raw {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b => out.push(b),
        }
    }
    (true, out)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hash: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = parse_args()?;
    let mut builder = ScannerBuilder::new();
    builder
        .algorithms(args.alg)
        .executables_only(args.executables_only)
        .max_file_size(args.max_size)
        .follow_symlinks(args.follow)
        .threads(args.threads);
    if let Some(t) = args.mmap_threshold {
        builder.mmap_threshold(t);
    }
    let scanner = builder.build();

    let mut cache = match &args.cache {
        Some(path) if path.exists() => Some(HashCache::load(path)?),
        Some(_) => Some(HashCache::new()),
        None => None,
    };
    let start = Instant::now();
    let report = scanner.scan_with(&args.paths, ScanHooks { cache: cache.as_mut(), ..ScanHooks::default() });
    let elapsed = start.elapsed();
    if let (Some(cache), Some(path)) = (cache.as_mut(), &args.cache) {
        cache.prune();
        // An unchanged cache is not rewritten (saving syncs it to disk).
        if cache.is_dirty() || !path.exists() {
            cache.save(path)?;
        }
    }

    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    for file in &report.hashed {
        let (escape, path) = escaped(&file.path);
        if escape {
            out.write_all(b"\\")?;
        }
        let d = file.digests;
        match (d.sha256, d.blake3) {
            (Some(s), Some(b)) => write!(out, "{s}  {b}  ")?,
            (Some(one), None) | (None, Some(one)) => write!(out, "{one}  ")?,
            (None, None) => bail!("{}: no digest computed", file.path.display()),
        }
        out.write_all(&path)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;

    let mut failed = false;
    for skipped in &report.skipped {
        let by_choice = matches!(skipped.reason, SkipReason::NotExecutable | SkipReason::Symlink);
        if !by_choice || args.verbose {
            eprintln!("hash: {}: {}", skipped.path.display(), skipped.reason);
        }
        failed |= !by_choice;
    }
    if args.stats {
        let secs = elapsed.as_secs_f64();
        eprintln!(
            "hash: {} files ({} from cache), {} bytes in {:.3} s: {:.2} GB/s, {:.0} files/s",
            report.hashed.len(),
            report.from_cache(),
            report.bytes(),
            secs,
            report.bytes() as f64 / secs / 1e9,
            report.hashed.len() as f64 / secs
        );
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
