//! Hashes files and folders (recursively), printing lines that `sha256sum`
//! and `b3sum` would print for the same files.
//!
//! ```text
//! cargo run --release --example hash -- [--alg sha256|blake3|both] [--executables-only]
//!     [--cache FILE] [--max-size BYTES] [--mmap-threshold BYTES] [--threads N]
//!     [--follow-symlinks] [--stats] [--verbose] PATH...
//! cargo run --release --example hash -- --help
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
//!
//! Exit status: 0 every file hashed, 1 a file not hashed or another failure
//! (an unreadable cache, a closed stdout), 2 bad arguments.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use clap::{Parser, ValueEnum};
use privtel::hash::{Algorithms, HashCache, ScanHooks, ScannerBuilder, SkipReason};

/// Hashes files and folders (recursively), printing the lines `sha256sum` and
/// `b3sum` would print for the same files.
///
/// Files that could not be hashed are listed on stderr with the reason and
/// make the exit status 1; bad arguments make it 2.
#[derive(Parser)]
#[command(name = "hash", version)]
struct Args {
    /// Which digests to print.
    #[arg(long, value_enum, default_value_t = Alg::Both)]
    alg: Alg,
    /// Hash executables (ELF, PE, Mach-O, scripts) only.
    #[arg(long)]
    executables_only: bool,
    /// Load the hash cache from FILE if it exists, save it there afterwards.
    #[arg(long, value_name = "FILE")]
    cache: Option<PathBuf>,
    /// Skip files larger than BYTES.
    #[arg(long, value_name = "BYTES")]
    max_size: Option<u64>,
    /// Map files of at least BYTES instead of reading them (faster BLAKE3 of
    /// large files; unsafe against another process truncating a file while
    /// it is hashed, which then kills this program with SIGBUS). Default:
    /// never map.
    #[arg(long, value_name = "BYTES")]
    mmap_threshold: Option<u64>,
    /// Hashing threads (0: one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// Follow symbolic links (otherwise they are skipped).
    #[arg(long = "follow-symlinks")]
    follow: bool,
    /// Print files, bytes, seconds and GB/s to stderr.
    #[arg(long)]
    stats: bool,
    /// Also list the files skipped by choice.
    #[arg(long)]
    verbose: bool,
    /// Files and folders to hash.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
}

/// `--alg`: the digests printed on each line.
#[derive(Clone, Copy, ValueEnum)]
enum Alg {
    /// `<sha256 hex>  <path>`, as `sha256sum`.
    Sha256,
    /// `<blake3 hex>  <path>`, as `b3sum`.
    Blake3,
    /// `<sha256 hex>  <blake3 hex>  <path>`, from one read.
    Both,
}

impl From<Alg> for Algorithms {
    fn from(alg: Alg) -> Self {
        match alg {
            Alg::Sha256 => Self::Sha256,
            Alg::Blake3 => Self::Blake3,
            Alg::Both => Self::Both,
        }
    }
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
    // Bad arguments: clap prints why and exits with status 2.
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hash: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut builder = ScannerBuilder::new();
    builder
        .algorithms(args.alg.into())
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
