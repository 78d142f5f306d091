//! Records the commit the benchmark is built from (`TERN_BENCH_BUILT_FROM`), so its report
//! names the code it measured even when the checkout moved on after the build.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    // Uncommitted changes are part of the build too: say so.
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let built_from = if dirty && !commit.is_empty() { format!("{commit}+changes") } else { commit };
    println!("cargo:rustc-env=TERN_BENCH_BUILT_FROM={built_from}");
    // Look again when HEAD moves (a commit, a checkout). Not on every change of the index:
    // `git status` itself rewrites it, and the bench would be rebuilt at every build.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
}
