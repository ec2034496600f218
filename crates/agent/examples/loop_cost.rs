//! What the agent's collection loop costs an idle machine: CPU and peak
//! memory with 200 extra processes running.
//!
//! ```text
//! cargo run --release -p privtel-agent --example loop_cost [-- --processes 200 --seconds 60 --every 10]
//! ```
//!
//! Starts `--processes` sleeping children (`/bin/sleep`), opens an agent on
//! a temporary spool, and every `--every` seconds for `--seconds` runs one
//! pass of the loop: the `/proc` collector (every process, executables
//! hashed through the cache), the performance samples, on-device retention.
//! The first pass (every binary hashed once) is reported alone; the CPU
//! share is that of the passes after it (the steady state of an idle
//! machine), from the process's own user + system time; peak RSS is the
//! kernel's high-water mark (`VmHWM`) at the end. Prints `RATIO` lines
//! against the goals (≤ 1 % of one core, ≤ 64 MiB). Linux only.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use privtel_agent::collect::{HostFiles, ProcessCollector};
use privtel_agent::{Agent, CustomerId, DeviceId, Timestamp};
use privtel_filter::{FilterBuilder, Policy};
use privtel_store::SpoolOptions;
use privtel_testkit::bench::ratio;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}: expected a whole number")))
}

/// User + system CPU time of this process, from `/proc/self/stat` (clock
/// ticks of 1/100 s).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (processes, seconds, every) = (arg("--processes", 200), arg("--seconds", 60), arg("--every", 10));
    let children = Children(
        (0..processes)
            .map(|_| Command::new("/bin/sleep").arg("3600").stdout(Stdio::null()).spawn())
            .collect::<Result<_, _>>()?,
    );
    let dir = tempfile::tempdir()?;
    let policy = Policy::from_toml("[programs]\npersonalised_usage = true\nenrichment = true\n")?;
    let customer = CustomerId::new("acme")?;
    let filter = FilterBuilder::new().policy(policy).customer(customer.clone()).build();
    let mut agent = Agent::open(
        customer,
        DeviceId::new("dev-1")?,
        filter,
        dir.path().join("spool.db"),
        SpoolOptions::default(),
    )?;
    let mut collector = ProcessCollector::new();
    let files = HostFiles::default();
    let pass =
        |agent: &mut Agent, collector: &mut ProcessCollector| -> Result<usize, Box<dyn std::error::Error>> {
            let now = Timestamp::now();
            let (report, _) = agent.collect_processes(collector, now)?;
            agent.collect_performance(&files, now)?;
            agent.maintain(now)?;
            Ok(report.running)
        };
    let (cpu0, wall0) = (cpu(), Instant::now());
    let running = pass(&mut agent, &mut collector)?;
    let first = (cpu() - cpu0, wall0.elapsed());
    println!(
        "first pass: {running} processes ({} started), {:.0} ms CPU, {:.0} ms wall, {} records waiting",
        children.0.len(),
        first.0.as_secs_f64() * 1e3,
        first.1.as_secs_f64() * 1e3,
        agent.outbox().len(None)?
    );
    let (cpu1, wall1) = (cpu(), Instant::now());
    let mut passes = 0;
    while wall1.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(every));
        pass(&mut agent, &mut collector)?;
        passes += 1;
    }
    let (used, wall) = (cpu() - cpu1, wall1.elapsed());
    let share = 100.0 * used.as_secs_f64() / wall.as_secs_f64();
    println!(
        "steady state: {passes} passes every {every} s over {:.0} s: {:.0} ms CPU ({:.1} ms a pass)",
        wall.as_secs_f64(),
        used.as_secs_f64() * 1e3,
        used.as_secs_f64() * 1e3 / passes.max(1) as f64
    );
    // A share of 0 (less than a clock tick in all) is printed as one tick.
    ratio("agent loop CPU, % of one core", share.max(0.01), 1.0, false, "%");
    ratio("agent loop peak RSS", peak_rss_mib(), 64.0, false, "MiB");
    drop(children);
    Ok(())
}
