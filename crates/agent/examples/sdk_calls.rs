//! Calls the SDK `N` times, for counting what the calls allocate under
//! `valgrind --tool=dhat` (`scripts/bench-sdk.sh` runs it with N = 0 and
//! N = 100,000 and prints the difference per call).
//!
//! ```text
//! cargo run --release -p privtel-agent --example sdk_calls -- off|on N
//! ```
//!
//! `off`: `configuration` and `feedback` with support telemetry off in the
//! policy; `on`: `configuration` with it on (the record built, filtered and
//! queued). The endpoint is unreachable; nothing is uploaded.

use std::time::Duration;

use privtel_agent::sdk::{Connector, TelemetryBuilder};
use privtel_agent::{AgentError, CustomerId, DeviceId};
use privtel_filter::Policy;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, n): (&str, u64) = match args.as_slice() {
        [_, mode, n] => (mode.as_str(), n.parse()?),
        _ => return Err("usage: sdk_calls off|on N".into()),
    };
    let on = match mode {
        "on" => true,
        "off" => false,
        _ => return Err("mode: expected off or on".into()),
    };
    let dir = tempfile::tempdir()?;
    let down = Connector::new(|| Err(AgentError::Refused { message: "down".into(), retryable: true }));
    let policy = Policy::from_toml(&format!("[programs]\nsupport_telemetry = {on}\n"))?;
    let sdk = TelemetryBuilder::new(CustomerId::new("acme")?, DeviceId::new("dev-1")?, "Studio", "4.2.0")
        .policy(policy)
        .spool_dir(dir.path())
        .first_upload_after(Duration::MAX)
        .queue_capacity(usize::MAX)
        .endpoint("analytics", down)
        .build()?;
    for _ in 0..n {
        sdk.configuration("theme", "dark");
        if !on {
            sdk.feedback(80, "fast, but confusing")?;
        }
    }
    let stats = sdk.stats();
    println!("{mode} {n}: recorded {}", stats.recorded);
    sdk.shutdown(Duration::from_secs(60))?;
    Ok(())
}
