//! `cargo xtask`: parse the flags, make one shell at the project root, run the verb.

mod cmd;
mod flags;

use clap::Parser;
use std::path::{Path, PathBuf};

fn main() {
    let flags = flags::Flags::parse();
    let passes_status = matches!(flags.command, flags::Command::Run(_) | flags::Command::Shell(_));
    let code = match run(flags) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            daxtest::exit::for_error(&e, passes_status)
        }
    };
    std::process::exit(code);
}

fn run(flags: flags::Flags) -> anyhow::Result<i32> {
    daxtest::cleanup::install_signal_handler()?;
    let root = project_root();
    let sh = xshell::Shell::new()?;
    sh.change_dir(&root);
    let ctx = cmd::Ctx::new(sh, root)?;
    match flags.command {
        flags::Command::Image(f) => f.run(&ctx),
        flags::Command::Run(f) => f.run(&ctx),
        flags::Command::Shell(f) => f.run(&ctx),
        flags::Command::Bench(f) => f.run(&ctx),
        flags::Command::Test(f) => f.run(&ctx),
        flags::Command::List(f) => f.run(&ctx),
        flags::Command::Check(f) => f.run(&ctx),
        flags::Command::Repro(f) => f.run(&ctx),
        flags::Command::Kernel(f) => f.run(&ctx),
        flags::Command::Mutants(f) => f.run(&ctx),
        flags::Command::Report(f) => f.run(&ctx),
    }
}

/// The workspace root: xtask's manifest directory's parent, wherever cargo was called from.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}
