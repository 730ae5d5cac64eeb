//! Project automation, in plain Rust: `cargo xtask <command>`.
//!
//! | command | what it runs |
//! |---|---|
//! | `test` | fmt check, clippy (`-D warnings`, all targets, all features), every test with all features (unit, integration, doc), rustdoc with `-D warnings` |
//! | `proptest [--cases N]` | the whole test suite (release, all features) with `PROPTEST_CASES=N` (default 10 000), so the property tests run more cases |
//! | `lint` | fmt check, clippy, rustdoc |
//! | `bench [NAME] [-- criterion args]` | the comparison benchmarks of `bench/` (all, or one) side by side with their peers |

use std::env;
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("proptest") => proptest(&args[1..]),
        Some("lint") => lint(),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  test                 fmt, clippy, all tests, docs (what CI runs)\n  proptest [--cases N] property tests with N cases each (default 10000)\n  lint                 fmt, clippy, docs\n  bench [NAME] [-- ..] comparison benchmarks against peer crates"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(step) => {
            eprintln!("xtask: `{step}` failed");
            ExitCode::FAILURE
        }
    }
}

type Step = Result<(), String>;

fn test() -> Step {
    lint()?;
    cargo(
        &["test", "--workspace", "--all-features", "--no-fail-fast"],
        &[],
    )
}

fn lint() -> Step {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--all-features", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
}

fn proptest(args: &[String]) -> Step {
    let cases = match args {
        [] => "10000".to_owned(),
        [flag, n] if flag == "--cases" && n.parse::<u32>().is_ok() => n.clone(),
        _ => return Err(format!("proptest {}: expected `--cases N`", args.join(" "))),
    };
    // Every property test is named `prop_*` or lives in a `proptest!` block whose
    // test names we cannot filter on, so run the whole suite with more cases.
    cargo(
        &["test", "--workspace", "--all-features", "--release"],
        &[("PROPTEST_CASES", cases.as_str())],
    )
}

fn bench(args: &[String]) -> Step {
    let (names, criterion): (Vec<&String>, Vec<&String>) = match args.iter().position(|a| a == "--")
    {
        Some(i) => (args[..i].iter().collect(), args[i + 1..].iter().collect()),
        None => (args.iter().collect(), Vec::new()),
    };
    let mut cmd: Vec<&str> = vec!["bench", "-p", "steadfast-bench"];
    for name in &names {
        cmd.extend(["--bench", name.as_str()]);
    }
    cmd.push("--");
    if criterion.is_empty() {
        cmd.extend(["--warm-up-time", "1", "--measurement-time", "3"]);
    } else {
        cmd.extend(criterion.iter().map(|s| s.as_str()));
    }
    cargo(&cmd, &[])
}

fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Step {
    let line = format!("cargo {}", args.join(" "));
    eprintln!("\nxtask: {line}");
    let started = Instant::now();
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .map_err(|e| format!("{line} (could not start: {e})"))?;
    eprintln!(
        "xtask: {line}: {} in {:.0?}",
        if status.success() { "ok" } else { "FAILED" },
        started.elapsed()
    );
    if status.success() { Ok(()) } else { Err(line) }
}
