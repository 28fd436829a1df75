//! Embeds the commit Kiln is built from: a plan encodes Kiln's IR, so it records (and
//! checks at load) the exact Kiln that wrote it.
use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown commit".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no", "--", "../kiln-ir/src"]).is_some_and(|s| !s.is_empty());
    println!("cargo:rustc-env=KILN_COMMIT={commit}{}", if dirty { "+ir-changes" } else { "" });
    for p in ["HEAD", "index"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=../kiln-ir/src");
}
