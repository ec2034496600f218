//! Starting programs a test has just written.

use std::process::{Child, Command};
use std::time::Duration;

/// How long a freshly written program may stay busy before giving up.
const BUSY_FOR: Duration = Duration::from_secs(2);

/// Starts `command`, whose program this process may have just written.
///
/// Another test thread forking at that moment holds the written file open
/// in its child until that child execs, and Linux refuses to run a file
/// open for writing (`ETXTBSY`); the fork's window is short, so the start
/// is tried again every 10 ms for up to 2 s. It returns once the child
/// runs the program: std's `spawn` waits for the child's exec to succeed
/// or fail, so `/proc/PID/exe` already names the program then.
///
/// ```
/// use std::process::Command;
///
/// let mut child = privtel_testkit::process::spawn_fresh(Command::new("true").arg("ignored"));
/// assert!(child.wait().unwrap().success());
/// ```
///
/// # Panics
///
/// If the program cannot be started (another error than a busy file, or
/// a file still busy after 2 s), naming it.
pub fn spawn_fresh(command: &mut Command) -> Child {
    let started = std::time::Instant::now();
    loop {
        match command.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && started.elapsed() < BUSY_FOR => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{} could not be started: {e}", command.get_program().display()),
            Ok(child) => return child,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of `sleep` in `dir`, and the copy held open for writing.
    fn written(dir: &std::path::Path) -> (std::path::PathBuf, std::fs::File) {
        let path = dir.join("fresh-sleep");
        std::fs::copy("/bin/sleep", &path).unwrap();
        let open = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        (path, open)
    }

    /// Held open for writing (as a forked child holds it until it execs),
    /// the program cannot be started; once the file is closed it is.
    #[test]
    fn a_program_held_open_for_writing_starts_once_it_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, open) = written(dir.path());
        let busy = Command::new(&path).arg("0").spawn().map(|mut c| c.wait());
        assert_eq!(busy.err().map(|e| e.kind()), Some(std::io::ErrorKind::ExecutableFileBusy));
        let mut child = std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                drop(open);
            });
            spawn_fresh(Command::new(&path).arg("600"))
        });
        // Already running the program, not a fork of this process (it
        // sleeps on, so its exe link cannot be gone before it is read).
        let exe = std::fs::read_link(format!("/proc/{}/exe", child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(exe.unwrap(), path);
    }

    #[test]
    #[should_panic(expected = "could not be started: Text file busy")]
    fn a_program_busy_for_longer_than_the_limit_panics_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _open) = written(dir.path());
        let _ = spawn_fresh(Command::new(&path).arg("0")).wait();
    }

    #[test]
    #[should_panic(expected = "/nonexistent/privtel-no-such-program could not be started")]
    fn a_program_that_is_not_there_panics_naming_it() {
        let _ = spawn_fresh(&mut Command::new("/nonexistent/privtel-no-such-program")).wait();
    }
}
