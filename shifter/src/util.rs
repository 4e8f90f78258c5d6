//! Small helpers shared by the daemon and the CLI.

/// `error: cause: cause` for an error and its sources, on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_text = c.to_string();
        if !s.ends_with(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        cur = c.source();
    }
    s
}

/// True when the error or one of its causes is the kernel refusing for lack of privilege
/// (EPERM or EACCES): a missing capability or a syscall filter, which a restart will not cure.
pub fn is_permission_denied(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// RFC 3339 time (UTC, milliseconds) of a Unix time in milliseconds.
pub fn format_time_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// Completes when the watch value turns true (or its sender is gone).
pub async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// A directory of its own under the system's temporary directory for a unit test, removed
/// on drop.
#[cfg(test)]
pub(crate) struct TestDir(pub std::path::PathBuf);

#[cfg(test)]
impl TestDir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "shifter-unit-{name}-{}-{}",
            std::process::id(),
            now_unix_ms()
        ));
        std::fs::create_dir_all(&p).expect("create the test directory");
        Self(p)
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::is_permission_denied;

    #[derive(Debug, thiserror::Error)]
    #[error("loading the eBPF object")]
    struct Wrapped(#[source] std::io::Error);

    #[test]
    fn permission_denied_is_found_among_the_causes() {
        let eperm = Wrapped(std::io::Error::from_raw_os_error(libc::EPERM));
        let eacces = Wrapped(std::io::Error::from_raw_os_error(libc::EACCES));
        let enoent = Wrapped(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert!(is_permission_denied(&eperm));
        assert!(is_permission_denied(&eacces));
        assert!(!is_permission_denied(&enoent));
    }
}
