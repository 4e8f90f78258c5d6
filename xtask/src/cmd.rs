//! Running external commands: each one is printed before it runs, and a failure names the step.

use anyhow::{Context as _, bail};
use std::ffi::OsStr;
use std::process::Command;

/// Prints a section header for a workflow step.
pub fn step(name: &str) {
    eprintln!("\n==> {name}");
}

/// Renders a command the way a user would type it.
pub fn render(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v))))
        .collect();
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+@,%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` for the workflow step `step`, inheriting stdio; fails unless it exits with 0.
pub fn run(step: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let shown = render(cmd);
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("step `{step}`: could not start `{shown}`"))?;
    if !status.success() {
        bail!("step `{step}` failed: `{shown}` exited with {status}");
    }
    Ok(())
}

/// Runs a probe quietly and returns its stdout when it exits with 0.
pub fn probe(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` is an executable file in one of the `PATH` directories.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Whether this process runs with uid 0.
pub fn is_root() -> bool {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_quotes_only_what_needs_it() {
        let mut cmd = Command::new("cargo");
        cmd.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
        assert_eq!(render(&cmd), "cargo clippy --all-targets -- -D warnings");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo it's"]).env("A", "x y");
        assert_eq!(render(&cmd), r"A='x y' sh -c 'echo it'\''s'");
    }
}
