use shifter::{DataPlane, LoadOptions};

#[test]
fn programs_load_and_pass_the_verifier() {
    let dir = format!("/sys/fs/bpf/shifter-smoke-{}", std::process::id());
    let dp = DataPlane::load(&LoadOptions::new(&dir));
    let r = dp.map(|dp| dp.remove_pins());
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = r {
        let mut s = format!("{e}");
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
        while let Some(c) = src { s += &format!(": {c}"); src = c.source(); }
        panic!("{s}");
    }
}
