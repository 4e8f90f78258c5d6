//! Executables from cargo's JSON messages (`--message-format=json`): which test and binary
//! targets a build produced, and where.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// Runs `cargo <args>` in `root` with JSON messages (diagnostics still rendered on stderr)
/// and returns the executables it built.
pub fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<Vec<(Kind, String, PathBuf)>> {
    let mut c = Command::new("cargo");
    c.args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stdout(Stdio::piped());
    eprintln!("$ {}", crate::cmd::render(&c));
    let out = c.spawn().context("running cargo")?.wait_with_output()?;
    if !out.status.success() {
        bail!("`{}` failed ({})", crate::cmd::render(&c), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(artifact)
        .collect())
}

#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Test,
    Bin,
}

/// An executable from one line of cargo's JSON messages: integration-test binaries (target
/// kind `test`) and binaries (kind `bin`, not built as tests).
pub fn artifact(line: &str) -> Option<(Kind, String, PathBuf)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["reason"] != "compiler-artifact" {
        return None;
    }
    let exe = PathBuf::from(v["executable"].as_str()?);
    let name = v["target"]["name"].as_str()?.to_owned();
    let kinds = v["target"]["kind"].as_array()?;
    let is_test = v["profile"]["test"].as_bool()?;
    if kinds.iter().any(|k| k == "test") && is_test {
        Some((Kind::Test, name, exe))
    } else if kinds.iter().any(|k| k == "bin") && !is_test {
        Some((Kind::Bin, name, exe))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_messages_give_test_and_bin_executables() {
        let test = r#"{"reason":"compiler-artifact","target":{"kind":["test"],"name":"integration"},"profile":{"test":true},"executable":"/t/debug/deps/integration-5d0e"}"#;
        let lib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"shifter_tests"},"profile":{"test":true},"executable":"/t/debug/deps/shifter_tests-04"}"#;
        let bin = r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"shifter"},"profile":{"test":false},"executable":"/t/debug/shifter"}"#;
        let rlib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"aya"},"profile":{"test":false},"executable":null}"#;
        assert_eq!(
            artifact(test),
            Some((
                Kind::Test,
                "integration".into(),
                "/t/debug/deps/integration-5d0e".into()
            ))
        );
        assert_eq!(
            artifact(bin),
            Some((Kind::Bin, "shifter".into(), "/t/debug/shifter".into()))
        );
        assert_eq!(artifact(lib), None);
        assert_eq!(artifact(rlib), None);
        assert_eq!(artifact("not json"), None);
    }
}
